"""``synchronous_commit = off`` for the batches is safe: a batch commits with its checkpoint, so a
crash that loses the commit loses both, and the run does the batch again. Proved with a real crash
of a throwaway server (commits acknowledged, never written to disk, gone after recovery), and with
a run that stays alive through a lost commit (it must go on from the database's checkpoint, not
the one it last saw)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

from dbops.models import BackfillRun, BackfillStatus
from devdb import embedded
from tests.dbops_testapp.models import Item
from tests.helpers import ROOT, raw_connection, server_pid, subprocess_env

FILL = ["dbops_testapp.Item", "name_upper", "--expression"]
AUDIT = [
    "CREATE TABLE backfill_audit (item_id bigint NOT NULL)",
    "CREATE FUNCTION backfill_audit_row() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN INSERT INTO backfill_audit VALUES (NEW.id); RETURN NEW; END $$",
    "CREATE TRIGGER backfill_audit AFTER UPDATE OF name_upper ON dbops_testapp_item"
    " FOR EACH ROW EXECUTE FUNCTION backfill_audit_row()",
]


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def dead(pid: int) -> bool:
    """Gone, or a zombie (nobody may reap a daemon's children in a container)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def crash(server: embedded.ServerStatus) -> None:
    """Every process of the server killed at once, as a power cut would: what sat in the shared
    WAL buffers is gone. The next start recovers from the WAL on disk."""
    processes = [server.pid, *children(server.pid)]
    for pid in processes:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while not all(dead(pid) for pid in processes):
        assert time.monotonic() < deadline, "the server's processes did not die"
        time.sleep(0.01)
    # A zombie postmaster's pid would pass for a running server: its lock files go.
    for lock in [server.pgdata / "postmaster.pid", *server.socket_dir.glob(".s.PGSQL.*")]:
        lock.unlink(missing_ok=True)


def progress(conn: psycopg.Connection) -> tuple[int, list]:
    return conn.execute("SELECT rows_done, last_key FROM dbops_backfillrun").fetchone() or (0, None)


def test_a_crash_loses_asynchronous_commits_and_the_run_does_those_batches_again():
    settings = {"autovacuum": "off", "wal_writer_delay": "10s"}
    with embedded.temporary_server(settings=settings) as server:
        env = subprocess_env(DATABASE_URL=server.socket_url(), EMBEDDED_PG_AUTOSTART="false")
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        with psycopg.connect(server.socket_url(), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO dbops_testapp_item (name, note)"
                " SELECT 'thing ' || i, '' FROM generate_series(1, 1000) i"
            )
            for sql in AUDIT:
                conn.execute(sql)
            walwriter = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'"
            ).fetchone()[0]
        # One row per batch (each takes 2 ms, over its 1 ms target), commits not waited for.
        slow = "(SELECT upper(name) FROM pg_sleep(0.002))"
        args = ["--batch-size", "1", "--target-batch-ms", "1", "--synchronous-commit", "off"]
        run = subprocess.Popen(
            [*manage, "backfill_column", *FILL, slow, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        with psycopg.connect(server.socket_url(), autocommit=True) as reader:
            deadline = time.monotonic() + 60
            while progress(reader)[0] < 20:
                assert run.poll() is None and time.monotonic() < deadline, run.stderr.read()
                time.sleep(0.01)
            # From here on nothing writes WAL to disk: commits stay in shared memory.
            os.kill(walwriter, signal.SIGSTOP)
            stopped_at = progress(reader)[0]
            while progress(reader)[0] < stopped_at + 10:
                assert run.poll() is None and time.monotonic() < deadline, run.stderr.read()
                time.sleep(0.01)
            seen = progress(reader)[0]
            crash(server)
        assert run.wait(60) != 0  # lost its server
        embedded.start(server.pgdata, port=server.port, listen="127.0.0.1", settings=settings)
        with psycopg.connect(server.socket_url(), autocommit=True) as conn:
            recovered, key = progress(conn)
            # Acknowledged to the run and to a reader, then gone: the batches and their checkpoint.
            assert recovered < seen
            filled = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE id > %s)"
                " FROM dbops_testapp_item WHERE name_upper IS NOT NULL",
                [int(key[0]) if key else 0],
            ).fetchone()
            assert filled == (recovered, 0)  # the checkpoint still names exactly the rows done
        # The same command again (its batch size and pace are its own): it resumes the run.
        subprocess.run(
            [*manage, "backfill_column", *FILL, slow, "--synchronous-commit", "off"],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with psycopg.connect(server.socket_url(), autocommit=True) as conn:
            assert conn.execute(
                "SELECT count(*) FROM dbops_testapp_item WHERE name_upper IS NULL"
            ).fetchone() == (0,)
            updates = conn.execute(
                "SELECT count(*), count(DISTINCT item_id) FROM backfill_audit"
            ).fetchone()
            assert updates == (1000, 1000), "a row was updated twice, or never"
            assert conn.execute(
                "SELECT count(*), min(status) FROM dbops_backfillrun"
            ).fetchone() == (
                1,
                "done",
            )


@pytest.mark.django_db(transaction=True)
def test_after_a_lost_commit_the_run_goes_on_from_the_databases_checkpoint():
    """A commit the run saw, then lost (a crash with synchronous_commit off, or a failover to a
    replica that never got it): the batch's rows and its checkpoint are back as they were and the
    connection is gone. The run must read the checkpoint back and do that batch again; going on
    from the one it remembered would leave those rows unfilled forever."""
    Item.objects.bulk_create(Item(name=f"thing {i}") for i in range(200))
    checkpoints: list[int] = []

    def lose_the_second_batch(execute, sql, params, many, context):
        if "set_config(" in sql and len(checkpoints) == 2:
            before, lost = checkpoints
            checkpoints.append(-1)
            with raw_connection() as other:
                other.execute(
                    "UPDATE dbops_testapp_item SET name_upper = NULL WHERE id > %s AND id <= %s",
                    [before, lost],
                )
                other.execute(
                    "UPDATE dbops_backfillrun SET last_key = jsonb_build_array(%s::text),"
                    " rows_done = rows_done - %s, keys_scanned = keys_scanned - %s",
                    [before, lost - before, lost - before],
                )
                other.execute("SELECT pg_terminate_backend(%s)", [server_pid()])
        result = execute(sql, params, many, context)
        if 'SET "last_key"' in sql and len(checkpoints) < 2:
            checkpoints.append(int(json.loads(params["key"])[0]))
        return result

    out = StringIO()
    with connection.execute_wrapper(lose_the_second_batch):
        call_command(
            "backfill_column",
            *FILL,
            "upper(name)",
            "--batch-size",
            "50",
            "--target-batch-ms",
            "1000000",
            stdout=out,
        )
    connection.close()
    assert checkpoints[-1] == -1, "the commit was never lost"
    run = BackfillRun.objects.get()
    assert run.status == BackfillStatus.DONE and run.rows_done == 200 and run.splits == 1
    assert not Item.objects.filter(name_upper=None).exists()
