import io
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from django.core.management import call_command

from devdb import embedded
from tests.helpers import ROOT


@pytest.fixture
def server_dir():
    """A directory the server's system user can reach. Not pytest's tmp_path: its root is kept
    at mode 0700, and another pytest run on the machine resets it mid-test."""
    path = Path(tempfile.mkdtemp(prefix="pgtest-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_start_from_many_callers_at_once_gives_one_server(server_dir):
    pgdata = server_dir / "data"
    try:
        with ThreadPoolExecutor(4) as pool:
            servers = list(pool.map(lambda _: embedded.start(pgdata, database="app"), range(4)))
        assert len({s.pid for s in servers}) == 1
        with psycopg.connect(servers[0].url("app")) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == "app"
        assert embedded.start(pgdata).pid == servers[0].pid
    finally:
        assert embedded.stop(pgdata)
    assert embedded.status(pgdata) is None
    assert embedded.stop(pgdata) is False


def test_embedded_db_status_does_not_start_the_server(server_dir, settings):
    settings.EMBEDDED_PGDATA = server_dir / ".pgdata"  # a server never started
    out = io.StringIO()
    call_command("embedded_db", "status", stdout=out)
    assert out.getvalue().strip() == f"stopped ({server_dir / '.pgdata'})"
    assert not (server_dir / ".pgdata").exists()  # nothing initialised, nothing started
    assert embedded.status(server_dir / ".pgdata") is None


def test_embedded_db_help_names_every_action():
    result = subprocess.run(
        [sys.executable, "manage.py", "embedded_db", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for action in ("status:", "start:", "stop:", "psql:"):
        assert action in result.stdout


def test_start_from_several_processes_at_once_gives_one_server(server_dir):
    pgdata = server_dir / "data"
    code = f"from pathlib import Path; from devdb import embedded; print(embedded.start(Path({str(pgdata)!r})).pid)"
    try:
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
            )
            for _ in range(3)
        ]
        pids = {p.communicate(timeout=120)[0].strip() for p in processes}
        assert len(pids) == 1 and pids != {""}
    finally:
        embedded.stop(pgdata)


def test_a_replica_is_a_streaming_hot_standby_of_the_primary(server_dir):
    pgdata = server_dir / "data"
    try:
        primary = embedded.start(pgdata, port=free_port_for_socket(), database="app")
        standby = embedded.replica_start(primary)
        assert (
            standby.pgdata == embedded.replica_pgdata(pgdata) and standby.port == primary.port + 1
        )
        with psycopg.connect(primary.socket_url("app"), autocommit=True) as conn:
            conn.execute("CREATE TABLE streamed (n int)")
            conn.execute("INSERT INTO streamed VALUES (42)")
            lsn = conn.execute("SELECT pg_current_wal_flush_lsn()").fetchone()[0]
        with psycopg.connect(standby.socket_url("app"), autocommit=True) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
            while not conn.execute("SELECT pg_last_wal_replay_lsn() >= %s", [lsn]).fetchone()[0]:
                pass  # replay is an event a few milliseconds away
            assert conn.execute("SELECT n FROM streamed").fetchone()[0] == 42
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("INSERT INTO streamed VALUES (1)")
        # Started again, it is found, not rebuilt.
        assert embedded.replica_start(primary).pid == standby.pid
    finally:
        embedded.replica_stop(pgdata)
        embedded.stop(pgdata)
    assert embedded.status(embedded.replica_pgdata(pgdata)) is None


def free_port_for_socket() -> int:
    """Unix sockets only: any port number is free in a directory of our own."""
    return 6543
