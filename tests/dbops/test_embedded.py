import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import psycopg

from dbops import embedded
from tests.helpers import ROOT


def test_start_from_many_callers_at_once_gives_one_server(tmp_path):
    pgdata = tmp_path / "data"
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


def test_embedded_db_status_does_not_start_the_server():
    result = subprocess.run(
        [sys.executable, "manage.py", "embedded_db", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "status: is it running" in result.stdout


def test_start_from_several_processes_at_once_gives_one_server(tmp_path):
    pgdata = tmp_path / "data"
    code = f"from pathlib import Path; from dbops import embedded; print(embedded.start(Path({str(pgdata)!r})).pid)"
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
