"""A throwaway PgBouncer in transaction mode in front of a PostgreSQL server, for tests and benchmarks.

Debian's ``pgbouncer`` package (``apt-get install pgbouncer``); it refuses to run as root, so as
root it runs as the embedded server's system user, like PostgreSQL. Its configuration, sockets,
log and pid file live in a temporary directory; it listens on 127.0.0.1 and a free port, trusts
its clients (``auth_type = trust``, the test servers' own setting) and sends every database name
to the one server (``* = ...``).

This module must not import Django.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devdb.embedded import SUPERUSER, _make_traversable, _run_as

PACKAGE = "pgbouncer"
CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


class PgBouncerMissing(RuntimeError):
    """No pgbouncer binary on this machine."""


def binary() -> str:
    for candidate in CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("pgbouncer")
    if found:
        return found
    raise PgBouncerMissing(
        f"PgBouncer is not installed: apt-get install -y {PACKAGE} (Debian's package, 1.18 or newer)"
    )


@dataclass(frozen=True)
class PgBouncer:
    host: str
    port: int
    admin_dir: Path

    def url(self, database: str, *, user: str = SUPERUSER) -> str:
        return f"postgres://{user}@{self.host}:{self.port}/{database}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _config(
    base: Path,
    port: int,
    server_host: str,
    server_port: int,
    pool_size: int,
    user: str,
    server_check_delay: int = 0,
) -> str:
    return f"""[databases]
* = host={server_host} port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir = {base}
auth_type = trust
auth_file = {base / "users.txt"}
admin_users = {user}
pool_mode = transaction
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 1000
max_db_connections = {pool_size}
server_reset_query =
server_check_delay = {server_check_delay}
ignore_startup_parameters = extra_float_digits
logfile = {base / "pgbouncer.log"}
pidfile = {base / "pgbouncer.pid"}
"""


@contextmanager
def running(
    server_host: str,
    server_port: int,
    *,
    pool_size: int = 2,
    user: str = SUPERUSER,
    timeout: float = 15,
    server_check_delay: int = 0,
) -> Iterator[PgBouncer]:
    """PgBouncer (transaction pooling, ``pool_size`` server connections per database and user) in
    front of the server at ``server_host``:``server_port``; stopped and removed afterwards.

    ``server_check_delay`` 0 (here the default): PgBouncer checks every server connection before
    handing it over, which hides most killed backends; PgBouncer's own default, 30 s, is what a
    production pooler runs with."""
    executable = binary()
    base = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    run_as = _run_as()
    port = _free_port()
    (base / "users.txt").write_text(f'"{user}" ""\n')
    (base / "pgbouncer.ini").write_text(
        _config(base, port, server_host, server_port, pool_size, user, server_check_delay)
    )
    if run_as:
        _make_traversable(base)
        for path in (base, *base.iterdir()):
            os.chown(path, run_as["user"], run_as["group"])
    # PgBouncer in the foreground logs every line to stderr as well as to its logfile, and blocks
    # whole when stderr does: a pipe that nobody reads fills at 64 KiB (a few hundred logins) and
    # froze every client, the admin console included. A file never fills, and still holds what
    # PgBouncer says before it opens its logfile (a configuration it refuses).
    with open(base / "stderr.log", "wb") as stderr:
        process = subprocess.Popen(
            [executable, str(base / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd="/",
            **run_as,
        )
    try:
        _wait_listening(process, port, base, timeout)
        yield PgBouncer("127.0.0.1", port, base)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        shutil.rmtree(base, ignore_errors=True)


def _wait_listening(process: subprocess.Popen, port: int, base: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            said = (base / "stderr.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pgbouncer exited ({process.returncode}): {said}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not listen on {port} in {timeout} s") from None
            time.sleep(0.02)
