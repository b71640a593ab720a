"""Migrations on a table big enough to matter, through the real ``manage.py migrate``.

1,500,000 rows (built with generate_series), the application's statement timeout scaled down to
50 ms: each long phase (a concurrent build, a validation scan) takes 2 to 60 times that here, and
each test first proves it (the phase run under the application's settings is cancelled). What
the default 30 s does to a table of tens of millions of rows, in seconds. A writer updates rows
all along and times each write; where that is the point, a long transaction is held open.

Marked ``scale``: ``pytest -m 'not scale'`` leaves them out; CI runs them.
"""

import logging
import random
import threading
import time
from contextlib import nullcontext

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection, transaction

from dbops.errors import QUERY_CANCELED
from dbops.operations import index_state
from tests.helpers import database_url, raw_connection, timeouts_seen

pytestmark = [pytest.mark.scale, pytest.mark.django_db(transaction=True)]

ROWS = 1_500_000
APP_STATEMENT_TIMEOUT_MS = 50
LOCK_TIMEOUT_MS = 1000
APP = "migrationsapp"


@pytest.fixture(scope="module")
def big_table(django_db_setup, django_db_blocker):
    """migrationsapp's table at its first migration, with ROWS rows; emptied and migrated to the
    end afterwards (the app table is not a model: the flush between tests leaves it alone)."""
    with django_db_blocker.unblock():
        call_command("migrate", APP, "0001", verbosity=0)
        with raw_connection() as conn:
            conn.execute("TRUNCATE migrationsapp_item")
            conn.execute(
                "INSERT INTO migrationsapp_item (n, note)"
                " SELECT g, md5(g::text) FROM generate_series(1, %s) g",
                [ROWS],
            )
            conn.execute("VACUUM ANALYZE migrationsapp_item")
        yield
        with raw_connection() as conn:
            conn.execute("TRUNCATE migrationsapp_item")
        call_command("migrate", APP, verbosity=0)
        connection.close()


@pytest.fixture
def app_settings(big_table, settings):
    """The application's connection with a 50 ms statement timeout (DB_STATEMENT_TIMEOUT_MS=50),
    migrate's lock timeout at 1 s, two attempts; the app's table back at 0001 afterwards."""
    saved = dict(connection.settings_dict["OPTIONS"])
    connection.close()
    connection.settings_dict["OPTIONS"] = {
        **saved,
        "options": f"-c statement_timeout={APP_STATEMENT_TIMEOUT_MS}",
    }
    settings.DBOPS = {
        **settings.DBOPS,
        "MIGRATION_LOCK_TIMEOUT_MS": LOCK_TIMEOUT_MS,
        "MIGRATION_LOCK_ATTEMPTS": 2,
        "MIGRATION_RETRY_DELAY_MS": 50,
    }
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["OPTIONS"] = saved
        call_command("migrate", APP, "0001", verbosity=0)


def cancelled_under_the_app_timeout(sql: str) -> bool:
    """True when ``sql`` on the application's connection is cancelled by its statement timeout:
    the table is big enough for the test to mean something."""
    from django.db import OperationalError

    from dbops.errors import sqlstate

    try:
        # In a transaction rolled back when it does finish (DDL must leave the table as it was),
        # except what cannot run in one (CREATE INDEX CONCURRENTLY).
        in_transaction = "CONCURRENTLY" not in sql
        with transaction.atomic() if in_transaction else nullcontext():
            with connection.cursor() as cursor:
                cursor.execute(sql)
            if in_transaction:
                transaction.set_rollback(True)
    except OperationalError as exc:
        return sqlstate(exc) == QUERY_CANCELED
    return False


class TimedWriter(threading.Thread):
    """Application traffic: one-row UPDATEs of random rows, every 5 ms, each timed."""

    def __init__(self):
        super().__init__(daemon=True)
        self.latencies_ms: list[float] = []
        self.stopping = threading.Event()
        self.conn = psycopg.connect(database_url(), autocommit=True)

    def run(self):
        rng = random.Random(17)
        while not self.stopping.is_set():
            started = time.monotonic()
            self.conn.execute(
                "UPDATE migrationsapp_item SET n = n WHERE id = %s", [rng.randint(1, ROWS)]
            )
            self.latencies_ms.append((time.monotonic() - started) * 1000)
            time.sleep(0.005)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.join(30)
        self.conn.close()

    @property
    def longest_ms(self) -> float:
        return max(self.latencies_ms)


def migrate_in_thread(target: str) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def run():
        try:
            with timeouts_seen() as seen:
                call_command("migrate", APP, target, verbosity=0)
            result["seen"] = seen
        except Exception as exc:  # noqa: BLE001 (asserted by the test)
            result["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def snapshot_wait_longer_than(seconds: float) -> bool:
    deadline = time.monotonic() + 60
    with raw_connection() as observer:
        while time.monotonic() < deadline:
            row = observer.execute(
                "SELECT extract(epoch FROM now() - state_change) FROM pg_stat_activity"
                " WHERE wait_event = 'virtualxid' AND query LIKE 'CREATE INDEX CONCURRENTLY%%'"
            ).fetchone()
            if row and row[0] >= seconds:
                return True
            time.sleep(0.05)
    return False


def test_a_concurrent_index_outlasts_the_app_timeout_and_an_old_transaction(app_settings):
    """The issue's two reproductions: the build is longer than the application's statement
    timeout, and a reporting transaction on another table stays open longer than the lock
    timeout times the attempts. The build waits for it, once, and the index is valid."""
    assert cancelled_under_the_app_timeout(
        "CREATE INDEX CONCURRENTLY probe_n_idx ON migrationsapp_item (n)"
    )
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX CONCURRENTLY IF EXISTS probe_n_idx")
    report = raw_connection(autocommit=False, application_name="monthly-report")
    report.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    report.execute("SELECT count(*) FROM django_content_type")
    with TimedWriter() as writer:
        worker, result = migrate_in_thread("0002")
        try:
            waited = snapshot_wait_longer_than(LOCK_TIMEOUT_MS * 2 / 1000 + 0.5)
        finally:
            report.rollback()
            report.close()
            worker.join(120)
    assert waited, "the build never waited behind the report"
    assert "error" not in result, result.get("error")
    assert index_state(connection, "item_n_idx") == "valid"
    builds = [s for s, *_ in result["seen"] if s.startswith("CREATE INDEX CONCURRENTLY")]
    assert len(builds) == 1  # never thrown away and built again
    assert writer.longest_ms < LOCK_TIMEOUT_MS


def test_a_validation_scan_outlasts_the_app_timeout_and_ends_valid(app_settings):
    call_command("migrate", APP, "0002", verbosity=0)
    assert cancelled_under_the_app_timeout(
        "SELECT count(*) FROM migrationsapp_item WHERE NOT note ~ '^[0-9a-f]{32}$'"
    )
    with TimedWriter() as writer:
        call_command("migrate", APP, "0003", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT convalidated FROM pg_constraint WHERE conname = 'item_note_md5'")
        assert cursor.fetchone() == (True,)
    assert writer.longest_ms < LOCK_TIMEOUT_MS


def test_a_phased_not_null_outlasts_the_app_timeout_and_ends_not_null(app_settings):
    call_command("migrate", APP, "0003", verbosity=0)
    # What a plain AlterField runs: SET NOT NULL scans the whole table under ACCESS EXCLUSIVE, in
    # one process (a count(*) probe, read by parallel workers, can finish in 50 ms on a fast box).
    assert cancelled_under_the_app_timeout(
        "ALTER TABLE migrationsapp_item ALTER COLUMN note SET NOT NULL"
    )
    with TimedWriter() as writer:
        call_command("migrate", APP, "0004", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.attnotnull, (SELECT count(*) FROM pg_constraint c WHERE c.conrelid ="
            " a.attrelid AND c.contype = 'c' AND c.conname LIKE '%%nn_check')"
            " FROM pg_attribute a WHERE a.attrelid = 'migrationsapp_item'::regclass"
            " AND a.attname = 'note'"
        )
        assert cursor.fetchone() == (True, 0)
    assert writer.longest_ms < LOCK_TIMEOUT_MS


def test_writes_wait_at_most_the_lock_timeout_behind_a_migration_blocked_by_a_report(
    app_settings,
):
    """A report holds the table (ACCESS SHARE) in a long transaction; the migration's ADD
    CONSTRAINT needs ACCESS EXCLUSIVE, and every write queues behind it while it waits. Under the
    lock timeout it gives up, the writes go on, it tries again and succeeds once the report
    ends. Without one, the writes would wait as long as the report lasts (up to 10 s here)."""
    call_command("migrate", APP, "0002", verbosity=0)
    report = raw_connection(autocommit=False, application_name="quarterly-report")
    report.execute("SELECT count(*) FROM migrationsapp_item WHERE n < 1000")
    first_timeout = threading.Event()

    class FirstTimeout(logging.Handler):
        def emit(self, record):
            if "lock timeout (attempt 1 of 2)" in record.getMessage():
                first_timeout.set()

    handler = FirstTimeout()
    guard_logger = logging.getLogger("dbops.migrations")
    guard_logger.addHandler(handler)
    # The report ends once the migration has given up once (at the latest after 10 s).
    ender = threading.Thread(target=lambda: (first_timeout.wait(10), report.rollback()))
    try:
        with TimedWriter() as writer:
            ender.start()
            call_command("migrate", APP, "0003", verbosity=0)
            ender.join(30)
    finally:
        guard_logger.removeHandler(handler)
        report.close()
    assert first_timeout.is_set()
    assert writer.longest_ms < LOCK_TIMEOUT_MS * 1.25
    assert writer.longest_ms > LOCK_TIMEOUT_MS / 2  # the writes did queue behind it
