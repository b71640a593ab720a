"""The backfill throttles itself on the database's health, each indicator made to fire for real:
a session blocked behind a batch's row lock, a VACUUM working on the table, WAL written over a
ceiling. (Replica lag: tests/dbops/test_backfill_replica.py.)"""

from __future__ import annotations

import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from dbops.backfill import run_cancel, throttle
from dbops.models import BackfillRun, BackfillStatus
from tests.dbops_testapp.models import Item
from tests.helpers import raw_connection, server_pid

pytestmark = pytest.mark.django_db(transaction=True)

FILL = ["dbops_testapp.Item", "name_upper", "--expression", "upper(name)"]


@pytest.fixture
def fast_polls(settings):
    settings.DBOPS = {**settings.DBOPS, "BACKFILL_POLL_S": 0.02, "BACKFILL_LOCK_WAIT_PAUSE_S": 0.1}


def items(count: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO dbops_testapp_item (name, note)"
            " SELECT 'thing ' || i, '' FROM generate_series(1, %s) i",
            [count],
        )


def newest_run() -> BackfillRun | None:
    return BackfillRun.objects.order_by("-pk").first()


class InThread:
    def __init__(self, *args: str):
        self.out = StringIO()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=args)
        self.thread.start()

    def _run(self, *args):
        try:
            call_command("backfill_column", *args, stdout=self.out)
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            self.error = exc
        finally:
            connection.close()

    def join(self) -> None:
        self.thread.join(60)
        assert not self.thread.is_alive()


def wait_until(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_session_waiting_behind_a_batch_makes_the_backfill_pause(settings, fast_polls):
    settings.DBOPS = {**settings.DBOPS, "BACKFILL_MAX_LOCK_WAIT_MS": 5}
    items(200)
    first_id = Item.objects.order_by("pk").values_list("pk", flat=True).first()
    blocked: list[threading.Thread] = []

    def block_a_writer_first(execute, sql, params, many, context):
        """Before the first checkpoint (the batch's row locks held): a writer updates a row of
        the batch and waits behind it; go on once PostgreSQL shows it waiting over 20 ms."""
        if 'SET "last_key"' in sql and not blocked:
            runner = server_pid()

            def writer():
                with raw_connection() as conn:
                    conn.execute(
                        "UPDATE dbops_testapp_item SET note = 'w' WHERE id = %s", [first_id]
                    )

            blocked.append(threading.Thread(target=writer))
            blocked[0].start()
            with raw_connection() as observer:
                wait_until(
                    lambda: observer.execute(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted"
                        " AND clock_timestamp() - waitstart > interval '20 ms'"
                        " AND %s = ANY(pg_blocking_pids(pid))",
                        [runner],
                    ).fetchone()[0],
                    "the writer to wait behind the batch",
                )
        return execute(sql, params, many, context)

    out = StringIO()
    with connection.execute_wrapper(block_a_writer_first):
        call_command("backfill_column", *FILL, "--batch-size", "50", stdout=out)
    blocked[0].join(10)
    run = newest_run()
    assert run.status == BackfillStatus.DONE and run.rows_done == 200
    pause = run.pauses["lock_waiters"]
    assert pause["count"] == 1 and pause["seconds"] >= 0.1
    assert "1 session(s) waited up to" in pause["last"] and "behind this backfill" in pause["last"]
    assert "Pausing for lock waiters: 1 session(s) waited" in out.getvalue()
    assert Item.objects.get(pk=first_id).note == "w"  # the writer went on after the batch


def test_a_vacuum_on_the_table_pauses_the_backfill_until_it_ends(fast_polls):
    items(20_000)
    vacuum_pid: list[int] = []

    def vacuum():
        # Slowed down to a crawl (100 ms after every page), so it is still working when the
        # backfill looks; cancelled by the test.
        with raw_connection() as conn:
            vacuum_pid.append(conn.info.backend_pid)
            conn.execute("SET vacuum_cost_delay = '100ms'")
            conn.execute("SET vacuum_cost_limit = 1")
            try:
                conn.execute("VACUUM dbops_testapp_item")
            except Exception:  # noqa: BLE001, S110 (cancelled by the test, as intended)
                pass

    vacuuming = threading.Thread(target=vacuum)
    vacuuming.start()
    with raw_connection() as observer:
        wait_until(
            lambda: observer.execute(
                "SELECT count(*) FROM pg_stat_progress_vacuum"
                " WHERE relid = 'dbops_testapp_item'::regclass"
            ).fetchone()[0],
            "the VACUUM to start",
        )
        backfill = InThread(*FILL, "--batch-size", "2000", "--target-batch-ms", "100000")
        wait_until(lambda: (run := newest_run()) is not None and "vacuum" in run.pauses, "a pause")
        paused = newest_run()
        time.sleep(0.2)  # ten polls: still waiting, nothing written
        assert newest_run().rows_done == paused.rows_done < 20_000
        observer.execute("SELECT pg_cancel_backend(%s)", vacuum_pid)
    vacuuming.join(10)
    backfill.join()
    assert backfill.error is None, backfill.error
    run = newest_run()
    assert run.status == BackfillStatus.DONE and run.rows_done == 20_000
    pause = run.pauses["vacuum"]
    assert pause["count"] == 1 and pause["seconds"] >= 0.2
    assert pause["last"].startswith(f"VACUUM pid {vacuum_pid[0]} (")  # a person's, not autovacuum
    assert "works on dbops_testapp_item" in pause["last"]
    assert "Pausing for vacuum: VACUUM pid" in backfill.out.getvalue()


def test_wal_written_over_the_ceiling_pauses_the_backfill(fast_polls, monkeypatch):
    # The rate over 0.2 s instead of 1 s, so a short test sees several windows.
    monkeypatch.setattr(throttle, "WAL_WINDOW_S", 0.2)
    items(20_000)
    backfill = InThread(
        *FILL,
        "--batch-size",
        "50",
        "--target-batch-ms",
        "100000",
        "--sleep",
        "0.1",
        "--max-wal-mb-per-s",
        "0.01",  # 10 KiB/s: every batch writes more than that
    )
    wait_until(lambda: (run := newest_run()) is not None and "wal_rate" in run.pauses, "a pause")
    # Whatever else writes WAL on this server meanwhile, the test is done: cancel the run.
    run_cancel(run_id=newest_run().pk, actor="test")
    backfill.join()
    run = newest_run()
    assert run.status == BackfillStatus.CANCELLED and run.rows_done < 20_000
    pause = run.pauses["wal_rate"]
    assert pause["count"] >= 1
    assert "WAL written at" in pause["last"] and "(limit 0.01 MiB/s)" in pause["last"]
    assert "Pausing for wal rate: WAL written at" in backfill.out.getvalue()


def test_every_indicator_can_be_switched_off_for_a_run(fast_polls):
    items(50)
    out = StringIO()
    call_command(
        "backfill_column",
        *FILL,
        "--max-lock-wait-ms",
        "0",
        "--no-vacuum-pause",
        "--max-wal-mb-per-s",
        "0",
        "--dry-run",
        stdout=out,
    )
    text = out.getvalue()
    assert "pause while: the replica lags over 2000 ms (no replica configured)" in text
    assert "behind a batch's locks" not in text and "VACUUM" not in text and "WAL" not in text
    call_command("backfill_column", *FILL, "--dry-run", stdout=(out := StringIO()))
    text = out.getvalue()
    assert "a session waited over 100 ms behind a batch's locks; a VACUUM works" in text
