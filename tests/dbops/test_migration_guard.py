"""``manage.py migrate`` under the migration guard: every statement's timeouts by the lock it takes,
lock timeouts retried (a whole atomic migration run again), the blockers named, one migrate at a
time, the toolkit's errors as a message. The migrations are tests/migrationsapp's, applied by the
real command."""

import io
import subprocess
import sys
import threading
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction

from dbops.exceptions import (
    MigrateAlreadyRunning,
    MigrationLockTimeout,
    MigrationStatementTooLong,
)
from dbops.lock_levels import Kind, classify
from dbops.migrate_lock import migrate_lock
from dbops.migration_guard import migration_guard
from dbops.operations import index_state
from tests.helpers import ROOT, raw_connection, subprocess_env, timeouts_seen

pytestmark = pytest.mark.django_db(transaction=True)

APP = "migrationsapp"
ITEM = "migrationsapp_item"


def migrate(*target, **options):
    options.setdefault("verbosity", 0)
    call_command("migrate", APP, *target, **options)


@pytest.fixture(autouse=True)
def migrationsapp_restored():
    """Each test leaves the app fully migrated and its table empty, as the suite expects."""
    yield
    connection.close()  # whatever session settings a failed test left
    migrate()
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {ITEM}")


@pytest.fixture
def quick_retries(settings):
    """Lock timeouts short enough for a test, retried almost at once."""
    settings.DBOPS = {
        **settings.DBOPS,
        "MIGRATION_LOCK_TIMEOUT_MS": 300,
        "MIGRATION_LOCK_ATTEMPTS": 2,
        "MIGRATION_RETRY_DELAY_MS": 10,
    }


class Holder:
    """Another client holding a lock on the table in an open transaction, as a report would."""

    def __init__(self, sql: str, *, application: str = "nightly-report", isolation=None):
        self.conn = raw_connection(autocommit=False, application_name=application)
        if isolation:
            self.conn.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
        self.conn.execute(sql)
        self.pid = self.conn.info.backend_pid

    def release(self):
        self.conn.rollback()
        self.conn.close()


# What each statement is ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql, kind, transactional",
    [
        ('ALTER TABLE "t" ADD COLUMN "c" integer NULL', Kind.BLOCKING, True),
        ('CREATE INDEX "i" ON "t" ("c")', Kind.BLOCKING, True),
        ('DROP TABLE "t" CASCADE', Kind.BLOCKING, True),
        ('CREATE INDEX CONCURRENTLY "i" ON "t" ("c")', Kind.NON_BLOCKING, False),
        ('DROP INDEX CONCURRENTLY IF EXISTS "i"', Kind.NON_BLOCKING, False),
        ("REINDEX INDEX CONCURRENTLY i", Kind.NON_BLOCKING, False),
        ('ALTER TABLE "t" VALIDATE CONSTRAINT "c"', Kind.NON_BLOCKING, True),
        ("ALTER TABLE t VALIDATE CONSTRAINT c, ADD COLUMN d int", Kind.BLOCKING, True),
        ("ALTER TABLE t DETACH PARTITION p CONCURRENTLY", Kind.NON_BLOCKING, False),
        ("REFRESH MATERIALIZED VIEW CONCURRENTLY m", Kind.NON_BLOCKING, True),
        ("VACUUM ANALYZE t", Kind.NON_BLOCKING, False),
        ("VACUUM (FULL, ANALYZE) t", Kind.BLOCKING, False),
        ("  -- a comment\n UPDATE t SET c = 1", Kind.DATA, True),
        ("WITH x AS (SELECT 1) DELETE FROM t", Kind.DATA, True),
        ("SET LOCAL lock_timeout = '1s'", Kind.CONTROL, True),
    ],
)
def test_each_statement_is_classed_by_the_lock_it_takes(sql, kind, transactional):
    statement = classify(sql)
    assert (statement.kind, statement.transactional) == (kind, transactional)


# Every statement migrate runs -----------------------------------------------------------------


def test_migrate_runs_every_statement_under_the_timeouts_of_its_lock_level(settings):
    """Django's operations (AddField, AlterField, RenameField, RunSQL, RemoveConstraint,
    RemoveField, CreateModel, AddConstraintNotValid) and dbops' included; the application's
    statement timeout (the connection's 30 s) is never what a statement runs under."""
    settings.DBOPS = {
        **settings.DBOPS,
        "MIGRATION_LOCK_TIMEOUT_MS": 1234,
        "MIGRATION_BLOCKING_STATEMENT_TIMEOUT_MS": 4321,
    }
    migrate("zero")
    with timeouts_seen() as seen:
        migrate()
    ours = [row for row in seen if APP in row[0] or "item_" in row[0]]
    blocking = ("1234ms", "4321ms")
    expected = {
        'CREATE TABLE "migrationsapp_item"': blocking,
        'CREATE INDEX CONCURRENTLY "item_n_idx"': ("0", "0"),
        'ALTER TABLE "migrationsapp_item" ADD CONSTRAINT "item_note_md5" CHECK': blocking,
        'ALTER TABLE "migrationsapp_item" VALIDATE CONSTRAINT "item_note_md5"': ("0", "0"),
        'ALTER TABLE "migrationsapp_item" ADD NOT NULL "note" NOT VALID': blocking,
        'ALTER TABLE "migrationsapp_item" ADD COLUMN "label"': blocking,
        'ALTER TABLE "migrationsapp_item" ALTER COLUMN "label" TYPE': blocking,
        'ALTER TABLE "migrationsapp_item" RENAME COLUMN "label" TO "title"': blocking,
        "UPDATE migrationsapp_item SET title = 'x' WHERE false": blocking,  # after a DDL: held
        'ALTER TABLE "migrationsapp_item" DROP CONSTRAINT "item_note_md5"': blocking,
        'ALTER TABLE "migrationsapp_item" DROP COLUMN "title"': blocking,
        'CREATE TABLE "migrationsapp_note"': blocking,
        'ALTER TABLE "migrationsapp_item" ADD COLUMN "flag"': blocking,
    }
    if connection.pg_version < 180000:
        del expected['ALTER TABLE "migrationsapp_item" ADD NOT NULL "note" NOT VALID']
        expected['ALTER TABLE "migrationsapp_item" ALTER COLUMN "note" SET NOT NULL'] = blocking
    for start, timeouts in expected.items():
        matching = [row[1:] for row in ours if row[0].startswith(start)]
        assert matching, f"no statement starting {start!r} ran"
        assert set(matching) == {timeouts}, start
    for statement, lock, statement_timeout in seen:
        if classify(statement).kind is not Kind.CONTROL:
            assert statement_timeout != "30s", statement
            assert lock in ("0", "1234ms"), statement


def test_migrate_leaves_the_connection_with_the_applications_settings():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')"
        )
        before = cursor.fetchone()
        migrate("0001")
        migrate()
        cursor.execute(
            "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')"
        )
        assert cursor.fetchone() == before == ("0", "30s")


def test_a_statement_that_holds_a_blocking_lock_past_the_bound_is_cancelled_saying_why(settings):
    settings.DBOPS = {**settings.DBOPS, "MIGRATION_BLOCKING_STATEMENT_TIMEOUT_MS": 200}
    started = time.monotonic()
    with pytest.raises(MigrationStatementTooLong, match="holding a lock that blocks reads"):
        with migration_guard(connection), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {ITEM} IN ACCESS EXCLUSIVE MODE")
            cursor.execute("SELECT pg_sleep(5)")  # still holding the lock: bounded too
    assert time.monotonic() - started < 4


def test_a_read_or_write_outside_a_transaction_has_no_statement_timeout(settings):
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 50")  # as if the application's were 50 ms
    try:
        with migration_guard(connection), connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(0.3)")
    finally:
        connection.close()


# Lock timeouts: retried, and the blockers named -------------------------------------------------


def test_a_lock_timeout_in_an_atomic_migration_runs_the_whole_migration_again(quick_retries):
    migrate("0005")
    holder = Holder("SELECT count(*) FROM migrationsapp_item")
    retrying = threading.Event()

    class Output(io.StringIO):
        def write(self, text):
            if "running it again" in text:
                retrying.set()
            return super().write(text)

    releaser = threading.Thread(target=lambda: (retrying.wait(20), holder.release()))
    releaser.start()
    out = Output()
    try:
        with timeouts_seen() as seen:
            migrate("0006", stdout=out, verbosity=1)
    finally:
        releaser.join()
    assert retrying.is_set(), out.getvalue()
    creates = [s for s, *_ in seen if s.startswith('CREATE TABLE "migrationsapp_note"')]
    assert len(creates) == 2  # the first was rolled back with the migration, then run again
    assert "lock timeout after 300 ms (attempt 1 of 2)" in out.getvalue()
    assert f"pid {holder.pid}" in out.getvalue()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM django_migrations WHERE app = %s", [APP])
        assert cursor.fetchone()[0] == 6


def test_a_lock_wait_that_never_ends_names_the_blocking_session_and_what_to_do(quick_retries):
    migrate("0005")
    holder = Holder("SELECT count(*) FROM migrationsapp_item /* the nightly report */")
    try:
        with pytest.raises(CommandError) as excinfo:
            migrate("0006")
    finally:
        holder.release()
    message = str(excinfo.value)
    assert isinstance(excinfo.value.__cause__, MigrationLockTimeout)
    assert "migrationsapp.0006_note_and_flag" in message
    assert "could not get its lock within 300 ms in 2 attempts" in message
    assert "rolled back" in message
    assert f"pid {holder.pid}" in message
    assert 'application "nightly-report"' in message
    assert "idle in transaction" in message
    assert "transaction open" in message
    assert "the nightly report" in message
    assert f"pg_terminate_backend(pid) for {holder.pid}" in message
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('migrationsapp_note')")
        assert cursor.fetchone()[0] is None  # nothing of the migration is left


def test_outside_a_transaction_the_statement_alone_is_retried_and_the_blocker_named(
    quick_retries,
):
    migrate("0002")
    holder = Holder("SELECT count(*) FROM migrationsapp_item")
    try:
        with pytest.raises(CommandError) as excinfo:
            migrate("0003")  # atomic = False: its ADD CONSTRAINT ... NOT VALID is blocked
    finally:
        holder.release()
    message = str(excinfo.value)
    assert "ADD CONSTRAINT" in message and "in 2 attempts" in message
    assert "The statement changed nothing" in message
    assert f"pid {holder.pid}" in message


def test_a_concurrent_build_waits_for_older_transactions_without_giving_up(quick_retries):
    """A concurrent build waits for every transaction older than it, on any table. PostgreSQL
    counts that wait against lock_timeout: under one it would give up and build again."""
    migrate("0001")
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO migrationsapp_item (n, note)"
            " SELECT g, md5(g::text) FROM generate_series(1, 1000) g"
        )
    holder = Holder("SELECT count(*) FROM django_content_type", isolation="REPEATABLE READ")
    result = {}

    def run():
        try:
            with timeouts_seen() as seen:
                migrate("0002")
            result["seen"] = seen
        except Exception as exc:  # noqa: BLE001 (asserted below)
            result["error"] = exc
        finally:
            connection.close()

    worker = threading.Thread(target=run)
    worker.start()
    try:
        waited = wait_for_snapshot_wait(seconds=1.0)  # > 300 ms x 2 attempts
    finally:
        holder.release()
        worker.join(30)
    assert waited, "the build never waited for the old transaction"
    assert "error" not in result, result.get("error")
    assert index_state(connection, "item_n_idx") == "valid"
    builds = [s for s, *_ in result["seen"] if s.startswith("CREATE INDEX CONCURRENTLY")]
    assert len(builds) == 1


def wait_for_snapshot_wait(*, seconds: float) -> bool:
    """True once a session has waited ``seconds`` for an older transaction (a concurrent build);
    False if none started waiting within 20 s."""
    deadline = time.monotonic() + 20
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


# One migrate at a time ----------------------------------------------------------------------------


def test_a_second_migrate_stops_at_once_naming_the_first():
    import os
    import socket

    with migrate_lock("default"):
        with pytest.raises(CommandError) as excinfo:
            migrate()
    assert isinstance(excinfo.value.__cause__, MigrateAlreadyRunning)
    message = str(excinfo.value)
    assert f"dbops migrate {socket.gethostname()} pid {os.getpid()}" in message
    assert "server pid" in message and "since" in message
    assert "MIGRATE_LOCK_WAIT_MS" in message
    migrate()  # the lock went with the first


def test_a_second_migrate_waits_for_the_first_when_told_to(settings):
    settings.DBOPS = {**settings.DBOPS, "MIGRATE_LOCK_WAIT_MS": 30_000}
    migrate("0001")
    first_holds, second_waits = threading.Event(), threading.Event()
    out = io.StringIO()

    def first():
        with migrate_lock("default"):
            first_holds.set()
            second_waits.wait(20)
        connection.close()

    holder = threading.Thread(target=first)
    holder.start()
    first_holds.wait(10)
    watcher = threading.Thread(target=lambda: (wait_for_advisory_waiter(), second_waits.set()))
    watcher.start()
    try:
        call_command("migrate", APP, stdout=out, verbosity=1)
    finally:
        second_waits.set()
        holder.join(20)
        watcher.join(20)
    assert "Waiting up to 30000 ms for the migrate running: dbops migrate" in out.getvalue()
    assert index_state(connection, "item_n_idx") == "valid"


def wait_for_advisory_waiter() -> None:
    deadline = time.monotonic() + 20
    with raw_connection() as observer:
        while time.monotonic() < deadline:
            if observer.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'advisory'"
                " AND application_name LIKE 'dbops migrate%%'"
            ).fetchone():
                return
            time.sleep(0.02)


def test_manage_py_migrate_says_what_stopped_it_without_a_traceback():
    with migrate_lock("default"):
        done = subprocess.run(
            [sys.executable, "manage.py", "migrate"],
            cwd=ROOT,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    assert done.stderr.startswith("CommandError: Another migrate is running on this database")
    assert "Traceback" not in done.stderr
