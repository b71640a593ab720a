"""Each operation applied and reversed on real tables, outside a transaction, as migrate runs them."""

import inspect
import logging
import threading
from contextlib import contextmanager

import pytest
from django.db import (
    IntegrityError,
    NotSupportedError,
    OperationalError,
    connection,
    models,
    transaction,
)
from django.db.migrations import Migration
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ModelState
from django.db.migrations.writer import MigrationWriter
from django.db.models.functions import Lower

from dbops import catalog
from dbops import operations as operations_module
from dbops.errors import LOCK_NOT_AVAILABLE, sqlstate
from dbops.exceptions import MigrationLockTimeout
from dbops.operations import (
    DEFAULT_ATTEMPTS,
    DEFAULT_LOCK_TIMEOUT_MS,
    AddForeignKeyNotValid,
    AddIndexConcurrently,
    AddUniqueConstraintConcurrently,
    MigrationBlocked,
    RemoveIndexConcurrently,
    RequireNoNulls,
    SafeDeleteModel,
    SafeRemoveField,
    SetNotNullPhased,
    ValidateConstraintWithLockTimeout,
    index_state,
)
from tests.dbops_testapp.factories import parent_create
from tests.dbops_testapp.models import Parent
from tests.helpers import raw_connection, statements_run, timeouts_seen

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_leftover_schema():
    """Whatever a test built, even one that failed half way, is gone afterwards: an INVALID or
    stray test index left in a reused test database would fail the next run's health checks."""
    yield
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE conname LIKE 'test\\_%%'"
            " AND conrelid = 'dbops_testapp_parent'::regclass"
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'ALTER TABLE dbops_testapp_parent DROP CONSTRAINT IF EXISTS "{name}"')
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid"
            " WHERE i.indrelid = 'dbops_testapp_parent'::regclass AND c.relname LIKE 'test\\_%%'"
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')
        cursor.execute(
            'CREATE INDEX CONCURRENTLY IF NOT EXISTS "parent_region" ON dbops_testapp_parent (region)'
        )


def current_state():
    return MigrationLoader(connection).project_state()


def forwards(operation, state=None, app_label="dbops_testapp"):
    state = state or current_state()
    new_state = state.clone()
    operation.state_forwards(app_label, new_state)
    with connection.schema_editor(atomic=False) as editor:
        operation.database_forwards(app_label, editor, state, new_state)
    return state, new_state


def backwards(operation, state, new_state, app_label="dbops_testapp"):
    with connection.schema_editor(atomic=False) as editor:
        operation.database_backwards(app_label, editor, new_state, state)


def constraint(name):
    with connection.cursor() as cursor:
        cursor.execute("SELECT convalidated FROM pg_constraint WHERE conname = %s", [name])
        row = cursor.fetchone()
    return None if row is None else ("valid" if row[0] else "not valid")


def column_nullable(table, column):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT is_nullable FROM information_schema.columns WHERE table_name = %s AND column_name = %s",
            [table, column],
        )
        return cursor.fetchone()[0] == "YES"


def test_add_index_concurrently_applies_and_reverses():
    op = AddIndexConcurrently("parent", models.Index(fields=["name"], name="test_parent_name"))
    state, new_state = forwards(op)
    assert index_state(connection, "test_parent_name") == "valid"
    backwards(op, state, new_state)
    assert index_state(connection, "test_parent_name") is None


def test_add_index_builds_concurrently_with_no_lock_or_statement_timeout():
    op = AddIndexConcurrently("parent", models.Index(fields=["name"], name="test_parent_name"))
    with timeouts_seen() as seen:
        forwards(op)
    builds = [row for row in seen if "CREATE INDEX" in row[0]]
    assert builds == [
        (
            'CREATE INDEX CONCURRENTLY "test_parent_name" ON "dbops_testapp_parent" ("name")',
            "0",
            "0",
        )
    ]


def test_remove_index_drops_concurrently():
    op = RemoveIndexConcurrently("parent", "parent_region")
    with statements_run() as sql:
        state, new_state = forwards(op)
    assert [s for s in sql if "DROP INDEX" in s] == [
        'DROP INDEX CONCURRENTLY IF EXISTS "parent_region"'
    ]
    with statements_run() as sql:
        backwards(op, state, new_state)
    assert any(s.startswith('CREATE INDEX CONCURRENTLY "parent_region"') for s in sql)


def test_unique_constraint_builds_its_index_concurrently_then_attaches_it():
    parent_create(name="A")
    op = AddUniqueConstraintConcurrently(
        "parent", models.UniqueConstraint(fields=["name"], name="test_unique_name")
    )
    with statements_run() as sql:
        forwards(op)
    ddl = [s for s in sql if s.startswith(("CREATE", "ALTER", "DROP"))]
    assert ddl == [
        'CREATE UNIQUE INDEX CONCURRENTLY "test_unique_name" ON "dbops_testapp_parent" ("name")',
        'ALTER TABLE "dbops_testapp_parent" ADD CONSTRAINT "test_unique_name" UNIQUE USING INDEX "test_unique_name"',
    ]


def test_remove_index_concurrently_applies_and_reverses():
    op = RemoveIndexConcurrently("parent", "parent_region")
    state, new_state = forwards(op)
    assert index_state(connection, "parent_region") is None
    backwards(op, state, new_state)
    assert index_state(connection, "parent_region") == "valid"


@pytest.mark.parametrize(
    "operation",
    [
        AddIndexConcurrently("parent", models.Index(fields=["name"], name="test_parent_name")),
        AddUniqueConstraintConcurrently(
            "parent", models.UniqueConstraint(fields=["name"], name="test_unique_name")
        ),
        SetNotNullPhased("parent", "name"),
        ValidateConstraintWithLockTimeout("parent", "parent_stock_gte_0"),
        RemoveIndexConcurrently("parent", "parent_region"),
        AddForeignKeyNotValid("child", "parent", "test_child_parent_fk"),
    ],
    ids=lambda op: op.__class__.__name__,
)
def test_operations_refuse_to_run_inside_a_transaction(operation):
    state = current_state()
    new_state = state.clone()
    operation.state_forwards("dbops_testapp", new_state)
    with transaction.atomic(), connection.schema_editor(atomic=False) as editor:
        with pytest.raises(NotSupportedError, match="set atomic = False on the migration"):
            operation.database_forwards("dbops_testapp", editor, state, new_state)


def test_leftover_invalid_index_is_dropped_and_built_again():
    parent_create(region="north")
    parent_create(region="north")
    with connection.cursor() as cursor, pytest.raises(IntegrityError):
        # A concurrent build that fails (duplicates) leaves its index behind, INVALID.
        cursor.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY test_region_idx ON dbops_testapp_parent (region)"
        )
    assert index_state(connection, "test_region_idx") == "invalid"
    assert catalog.invalid_indexes() == [
        {"index": "test_region_idx", "table": "dbops_testapp_parent"}
    ]

    op = AddIndexConcurrently("parent", models.Index(fields=["region"], name="test_region_idx"))
    state, new_state = forwards(op)
    assert index_state(connection, "test_region_idx") == "valid"
    assert catalog.invalid_indexes() == []
    backwards(op, state, new_state)


def test_a_concurrent_build_waits_for_a_held_lock_however_long_it_takes():
    """Its lock (SHARE UPDATE EXCLUSIVE) blocks no reads or writes: no lock timeout, so it waits
    longer than the operation's lock_timeout_ms x attempts, and builds once."""
    holder = raw_connection(autocommit=False)
    holder.execute("LOCK TABLE dbops_testapp_parent IN SHARE ROW EXCLUSIVE MODE")
    op = AddIndexConcurrently(
        "parent",
        models.Index(fields=["name"], name="test_parent_name"),
        lock_timeout_ms=50,
        attempts=2,
    )
    done = threading.Event()
    result = {}

    def build():
        try:
            result["state"] = forwards(op)
        finally:
            connection.close()
            done.set()

    worker = threading.Thread(target=build)
    worker.start()
    try:
        assert not done.wait(0.5)  # 50 ms x 2 attempts are long gone: still waiting
    finally:
        holder.rollback()
        holder.close()
        worker.join(30)
    assert index_state(connection, "test_parent_name") == "valid"
    backwards(op, *result["state"])


def test_a_blocking_statement_is_retried_until_the_other_transaction_lets_go(child_table, settings):
    settings.DBOPS = {**settings.DBOPS, "MIGRATION_RETRY_DELAY_MS": 20}
    holder = raw_connection(autocommit=False)
    holder.execute("UPDATE dbops_testapp_scratchchild SET note = note")  # a writer, mid-transaction
    op = AddForeignKeyNotValid(
        "scratchchild", "parent", "scratch_parent_fk", lock_timeout_ms=100, attempts=10
    )
    first_timeout = threading.Event()

    class ReleaseOnFirstRetry(logging.Handler):
        def emit(self, record):
            if "lock timeout (attempt 1 of 10)" in record.getMessage():
                first_timeout.set()

    handler = ReleaseOnFirstRetry()
    logging.getLogger("dbops.migrations").addHandler(handler)
    releaser = threading.Thread(target=lambda: (first_timeout.wait(10), holder.rollback()))
    releaser.start()
    try:
        forwards(op, child_table)
    finally:
        releaser.join()
        holder.close()
        logging.getLogger("dbops.migrations").removeHandler(handler)
    assert first_timeout.is_set()
    assert constraint("scratch_parent_fk") == "not valid"


def test_a_lock_that_never_goes_stops_the_operation_naming_who_holds_it(child_table, settings):
    settings.DBOPS = {**settings.DBOPS, "MIGRATION_RETRY_DELAY_MS": 10}
    holder = raw_connection(autocommit=False, application_name="long-import")
    holder.execute("UPDATE dbops_testapp_scratchchild SET note = note")
    holder_pid = holder.info.backend_pid
    op = AddForeignKeyNotValid(
        "scratchchild", "parent", "scratch_parent_fk", lock_timeout_ms=300, attempts=2
    )
    try:
        with pytest.raises(MigrationLockTimeout) as excinfo:
            forwards(op, child_table)
    finally:
        holder.rollback()
        holder.close()
    message = str(excinfo.value)
    assert "adding foreign key scratch_parent_fk" in message
    assert f"pid {holder_pid}" in message and '"long-import"' in message
    assert constraint("scratch_parent_fk") is None  # the statement changed nothing
    forwards(op, child_table)  # and runs once the lock is gone
    assert constraint("scratch_parent_fk") == "not valid"


def test_unique_constraint_concurrently_applies_and_reverses():
    parent_create(name="A")
    parent_create(name="B")
    op = AddUniqueConstraintConcurrently(
        "parent", models.UniqueConstraint(fields=["name"], name="test_unique_name")
    )
    state, new_state = forwards(op)
    assert constraint("test_unique_name") == "valid"
    with pytest.raises(IntegrityError):
        parent_create(name="A")
    backwards(op, state, new_state)
    assert constraint("test_unique_name") is None
    assert index_state(connection, "test_unique_name") is None


@pytest.fixture
def child_table():
    """A scratch model with an unconstrained foreign key and a nullable column."""
    state = current_state()
    state.add_model(
        ModelState(
            "dbops_testapp",
            "ScratchChild",
            [
                ("id", models.BigAutoField(primary_key=True)),
                (
                    "parent",
                    models.ForeignKey(
                        "dbops_testapp.parent", on_delete=models.CASCADE, db_constraint=False
                    ),
                ),
                ("note", models.CharField(max_length=20, null=True)),
            ],
        )
    )
    model = state.apps.get_model("dbops_testapp", "ScratchChild")
    with connection.schema_editor() as editor:
        editor.create_model(model)
    yield state
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS dbops_testapp_scratchchild")


def insert_child(parent_id, note="x"):
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO dbops_testapp_scratchchild (parent_id, note) VALUES (%s, %s)",
            [parent_id, note],
        )


def test_foreign_key_not_valid_checks_new_rows_then_validates_old_ones(child_table):
    parent = parent_create()
    insert_child(parent.pk)
    insert_child(999_999)  # an orphan from before the constraint
    add = AddForeignKeyNotValid("scratchchild", "parent", "scratch_parent_fk")
    state, new_state = forwards(add, child_table)
    assert constraint("scratch_parent_fk") == "not valid"
    assert new_state.models["dbops_testapp", "scratchchild"].fields["parent"].db_constraint is True
    with pytest.raises(IntegrityError):
        insert_child(888_888)  # new rows are checked at once

    validate = ValidateConstraintWithLockTimeout("scratchchild", "scratch_parent_fk")
    with pytest.raises(IntegrityError):
        forwards(validate, new_state)  # the old orphan fails validation
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM dbops_testapp_scratchchild WHERE parent_id = 999999")
    forwards(validate, new_state)
    assert constraint("scratch_parent_fk") == "valid"
    backwards(add, state, new_state)
    assert constraint("scratch_parent_fk") is None


NATIVE_NOT_NULL = 180000  # PostgreSQL 18: ADD NOT NULL ... NOT VALID, and a named constraint


def not_null(table, column):
    """(NOT NULL, its constraint (PostgreSQL 18) or None) of a column, from the catalog."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.attnotnull, (SELECT c.convalidated FROM pg_constraint c"
            "  WHERE c.conrelid = a.attrelid AND c.contype = 'n' AND c.conkey = ARRAY[a.attnum])"
            " FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attname = %s",
            [table, column],
        )
        return cursor.fetchone()


def test_set_not_null_in_phases_applies_resumes_and_reverses(child_table):
    parent = parent_create()
    insert_child(parent.pk, "a")
    insert_child(parent.pk, None)
    op = SetNotNullPhased("scratchchild", "note")
    with pytest.raises(IntegrityError):
        forwards(op, child_table)  # VALIDATE finds the NULL
    with pytest.raises(IntegrityError):
        insert_child(parent.pk, None)  # new rows are checked from the first phase on
    if connection.pg_version >= NATIVE_NOT_NULL:
        assert not_null("dbops_testapp_scratchchild", "note") == (True, False)  # NOT NULL NOT VALID
    else:
        assert column_nullable("dbops_testapp_scratchchild", "note")
        assert constraint("dbops_testapp_scratchchild_note_nn_check") == "not valid"

    with connection.cursor() as cursor:
        cursor.execute("UPDATE dbops_testapp_scratchchild SET note = 'b' WHERE note IS NULL")
    state, new_state = forwards(op, child_table)  # picks up where it stopped
    assert not column_nullable("dbops_testapp_scratchchild", "note")
    assert constraint("dbops_testapp_scratchchild_note_nn_check") is None
    assert new_state.models["dbops_testapp", "scratchchild"].fields["note"].null is False
    backwards(op, state, new_state)
    assert column_nullable("dbops_testapp_scratchchild", "note")


def test_set_not_null_takes_no_full_scan_under_an_access_exclusive_lock(child_table):
    """PostgreSQL 18: ADD NOT NULL NOT VALID, then VALIDATE (writes go on). Before 18: SET NOT NULL
    scans the whole table under ACCESS EXCLUSIVE unless a valid CHECK proves it; PostgreSQL says
    so at DEBUG1, which the connection is asked to pass on here."""
    parent = parent_create()
    insert_child(parent.pk, "a")
    op = SetNotNullPhased("scratchchild", "note")
    notices = []
    connection.ensure_connection()
    connection.connection.add_notice_handler(lambda diag: notices.append(diag.message_primary))
    with connection.cursor() as cursor:
        cursor.execute("SET client_min_messages = debug1")
    try:
        with statements_run() as sql:
            forwards(op, child_table)
    finally:
        connection.close()  # the session setting and the handler go with the connection
    ddl = [s for s in sql if s.startswith("ALTER TABLE")]
    if connection.pg_version >= NATIVE_NOT_NULL:
        assert ddl == [
            'ALTER TABLE "dbops_testapp_scratchchild" ADD NOT NULL "note" NOT VALID',
            'ALTER TABLE "dbops_testapp_scratchchild" VALIDATE CONSTRAINT "dbops_testapp_scratchchild_note_not_null"',
        ]
        assert not_null("dbops_testapp_scratchchild", "note") == (True, True)
        return
    check = '"dbops_testapp_scratchchild_note_nn_check"'
    assert ddl == [
        f'ALTER TABLE "dbops_testapp_scratchchild" ADD CONSTRAINT {check} CHECK ("note" IS NOT NULL) NOT VALID',
        f'ALTER TABLE "dbops_testapp_scratchchild" VALIDATE CONSTRAINT {check}',
        'ALTER TABLE "dbops_testapp_scratchchild" ALTER COLUMN "note" SET NOT NULL',
        f'ALTER TABLE "dbops_testapp_scratchchild" DROP CONSTRAINT IF EXISTS {check}',
    ]
    assert any("sufficient to prove that it does not contain nulls" in n for n in notices), notices


def test_set_not_null_on_a_column_that_is_not_null_already_keeps_it():
    """On PostgreSQL 18 a column's NOT NULL is a constraint named <table>_<column>_not_null: the
    operation must never take it for a check of its own and drop it."""
    op = SetNotNullPhased("parent", "name")
    state, new_state = forwards(op)
    assert not_null("dbops_testapp_parent", "name")[0] is True
    with pytest.raises(IntegrityError), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO dbops_testapp_parent (name, region, stock, balance, version, note)"
                " VALUES (NULL, 'north', 0, 0, 1, '')"
            )
    backwards(op, state, new_state)  # NOT NULL before the operation: reversing keeps it
    assert not_null("dbops_testapp_parent", "name")[0] is True


def test_set_not_null_drops_its_own_leftover_check_once_the_column_is_not_null(child_table):
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE dbops_testapp_scratchchild ALTER COLUMN note SET NOT NULL")
        cursor.execute(
            "ALTER TABLE dbops_testapp_scratchchild ADD CONSTRAINT dbops_testapp_scratchchild_note_nn_check"
            " CHECK (note IS NOT NULL) NOT VALID"
        )  # left by a run that stopped between SET NOT NULL and the drop
    forwards(SetNotNullPhased("scratchchild", "note"), child_table)
    assert constraint("dbops_testapp_scratchchild_note_nn_check") is None
    assert not column_nullable("dbops_testapp_scratchchild", "note")


def test_set_not_null_never_takes_another_constraint_for_its_check(child_table):
    with connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE dbops_testapp_scratchchild ADD CONSTRAINT dbops_testapp_scratchchild_note_nn_check"
            " CHECK (length(note) < 10) NOT VALID"
        )
    op = SetNotNullPhased("scratchchild", "note")
    if connection.pg_version >= NATIVE_NOT_NULL:
        forwards(op, child_table)  # the check is not needed there, and not touched
        assert not column_nullable("dbops_testapp_scratchchild", "note")
    else:
        with pytest.raises(MigrationBlocked, match="is not CHECK \\(note IS NOT NULL\\)"):
            forwards(op, child_table)
    assert constraint("dbops_testapp_scratchchild_note_nn_check") == "not valid"


@contextmanager
def writers_and_readers_at_work(table):
    """Another session holds ``table`` in EXCLUSIVE mode, which every lock conflicts with but the
    ACCESS SHARE of a plain read; Django's connection gives up on any lock wait after 500 ms."""
    other = raw_connection(autocommit=False)
    other.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '500ms'")
    try:
        yield
    except OperationalError as exc:
        if sqlstate(exc) == LOCK_NOT_AVAILABLE:
            pytest.fail(f"the operation waited for a lock on {table}: {exc}")
        raise
    finally:
        other.close()
        connection.close()  # the session's lock_timeout goes with it


def test_require_no_nulls_stops_naming_the_command_with_only_a_plain_read(child_table):
    parent = parent_create()
    insert_child(parent.pk, "a")
    insert_child(parent.pk, None)
    command = "python manage.py backfill_column dbops_testapp.ScratchChild note --value n/a"
    op = RequireNoNulls("scratchchild", "note", command)
    with (
        writers_and_readers_at_work("dbops_testapp_scratchchild"),
        pytest.raises(MigrationBlocked) as excinfo,
    ):
        forwards(op, child_table)
    assert command in str(excinfo.value)
    assert "dbops_testapp.scratchchild.note still has rows to fill" in str(excinfo.value)
    assert "stopped before changing anything" in str(excinfo.value)


def test_require_no_nulls_lets_the_migration_go_on_once_no_null_is_left(child_table):
    parent = parent_create()
    insert_child(parent.pk, "a")
    op = RequireNoNulls("scratchchild", "note", "python manage.py backfill_column x y")
    with writers_and_readers_at_work("dbops_testapp_scratchchild"):
        forwards(op, child_table)
    assert column_nullable("dbops_testapp_scratchchild", "note")  # it checks; it changes nothing


# Every operation with every argument set to something other than its default: a migration written
# with these must come back with the same arguments, or a squashed or regenerated migration would
# silently run with other timeouts.
NON_DEFAULT_OPERATIONS = [
    AddIndexConcurrently(
        "parent",
        models.Index(fields=["name"], name="rt_parent_name"),
        lock_timeout_ms=1234,
        attempts=7,
    ),
    RemoveIndexConcurrently("parent", "parent_region", lock_timeout_ms=2345, attempts=2),
    AddUniqueConstraintConcurrently(
        "parent",
        models.UniqueConstraint(fields=["name"], name="rt_unique_name"),
        lock_timeout_ms=3456,
        attempts=3,
    ),
    AddForeignKeyNotValid("child", "parent", "rt_child_parent_fk", lock_timeout_ms=45, attempts=9),
    ValidateConstraintWithLockTimeout(
        "child", "rt_child_parent_fk", lock_timeout_ms=5678, attempts=4
    ),
    SetNotNullPhased("parent", "name", lock_timeout_ms=6789, attempts=6),
    RequireNoNulls("parent", "sku", "python manage.py backfill_column x y"),
    SafeRemoveField(
        "parent", "owner", stage="delete", column="owner_id", lock_timeout_ms=11, attempts=8
    ),
    SafeDeleteModel(
        "Child", stage="delete", db_table="dbops_testapp_child", lock_timeout_ms=12, attempts=3
    ),
]


def operation_classes():
    return sorted(
        (
            cls
            for cls in vars(operations_module).values()
            if isinstance(cls, type)
            and issubclass(cls, Operation)
            and cls.__module__ == operations_module.__name__
            and not cls.__name__.startswith("_")
        ),
        key=lambda cls: cls.__name__,
    )


def constructor_arguments(cls):
    return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]


def written_and_loaded(operations):
    """Write a migration with MigrationWriter, execute the written source, return its operations."""
    migration = Migration("0099_round_trip", "dbops_testapp")
    migration.operations = operations
    source = MigrationWriter(migration).as_string()
    namespace = {}
    exec(compile(source, "0099_round_trip.py", "exec"), namespace)  # noqa: S102 (our own writer's output)
    return source, namespace["Migration"]("0099_round_trip", "dbops_testapp").operations


def test_the_round_trip_sample_covers_every_operation_class():
    assert sorted({type(op) for op in NON_DEFAULT_OPERATIONS}, key=lambda c: c.__name__) == (
        operation_classes()
    )


@pytest.mark.parametrize("operation", NON_DEFAULT_OPERATIONS, ids=lambda op: type(op).__name__)
def test_deconstruct_returns_every_constructor_argument(operation):
    name, args, kwargs = operation.deconstruct()
    assert name == type(operation).__name__ and args == []
    assert sorted(kwargs) == sorted(constructor_arguments(type(operation)))


def test_operations_written_by_migration_writer_load_back_with_every_argument():
    source, loaded = written_and_loaded(NON_DEFAULT_OPERATIONS)
    assert "import dbops.operations" in source
    assert [op.deconstruct() for op in loaded] == [
        op.deconstruct() for op in NON_DEFAULT_OPERATIONS
    ]
    for original, copy in zip(NON_DEFAULT_OPERATIONS, loaded, strict=True):
        assert type(copy) is type(original)
        for argument in constructor_arguments(type(original)):
            assert getattr(copy, argument) == getattr(original, argument), argument


def test_default_arguments_are_left_out_of_the_written_migration():
    source, [loaded] = written_and_loaded([SetNotNullPhased("parent", "name")])
    assert "lock_timeout_ms" not in source and "attempts" not in source
    assert (loaded.lock_timeout_ms, loaded.attempts) == (DEFAULT_LOCK_TIMEOUT_MS, DEFAULT_ATTEMPTS)


@pytest.mark.parametrize("bad", [{"lock_timeout_ms": 0}, {"attempts": 0}])
def test_operations_refuse_a_timeout_or_attempts_below_one(bad):
    with pytest.raises(ValueError, match="must be >= 1"):
        SetNotNullPhased("parent", "name", **bad)


# AddUniqueConstraintConcurrently keeps every option it takes -----------------------------------


UNIQUE_OPTIONS = {
    "deferred": dict(fields=["name"], deferrable=models.Deferrable.DEFERRED),
    "immediate": dict(fields=["name"], deferrable=models.Deferrable.IMMEDIATE),
    "nulls_not_distinct": dict(fields=["name"], nulls_distinct=False),
    "nulls_distinct": dict(fields=["name"], nulls_distinct=True),
    "include": dict(fields=["name"], include=["region"]),
    "opclasses": dict(fields=["name"], opclasses=["varchar_pattern_ops"]),
    "condition": dict(fields=["name"], condition=models.Q(region="north")),
    "expressions": dict(expressions=[Lower("name"), "region"]),
    "everything_an_index_takes": dict(
        fields=["name", "sku"],
        include=["region"],
        opclasses=["varchar_pattern_ops", "varchar_pattern_ops"],
        condition=models.Q(region="north"),
        nulls_distinct=False,
    ),
}


def catalog_of(name):
    """What PostgreSQL holds for a unique constraint or index called ``name``, the name itself
    left out: the index definition, and the constraint with its deferral if there is one."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT pg_get_indexdef(i.indexrelid), i.indisunique, i.indisvalid,
                   c.contype, c.condeferrable, c.condeferred, pg_get_constraintdef(c.oid)
              FROM pg_index i
              JOIN pg_class ic ON ic.oid = i.indexrelid
              LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
             WHERE ic.relname = %s
            """,
            [name],
        )
        row = cursor.fetchone()
    assert row is not None, f"no index {name}"
    return tuple(str(value).replace(name, "<name>") for value in row)


@pytest.mark.parametrize("options", UNIQUE_OPTIONS.values(), ids=list(UNIQUE_OPTIONS))
def test_unique_constraint_concurrently_leaves_the_catalog_django_would_for_every_option(options):
    """The model state's constraint, as the database holds it after the operation, is what
    Django's own AddConstraint makes of the same constraint."""
    options = dict(options)
    expressions = options.pop("expressions", ())
    ours = models.UniqueConstraint(*expressions, name="test_ours", **options)
    django = models.UniqueConstraint(*expressions, name="test_djangos", **options)
    op = AddUniqueConstraintConcurrently("parent", ours)
    state, new_state = forwards(op)
    assert ours in new_state.models["dbops_testapp", "parent"].options["constraints"]
    forwards(migrations_AddConstraint("parent", django), new_state)
    assert catalog_of("test_ours") == catalog_of("test_djangos")
    backwards(op, state, new_state)
    assert index_state(connection, "test_ours") is None


def migrations_AddConstraint(model_name, constraint):  # noqa: N802 (Django's operation)
    from django.db.migrations import AddConstraint

    return AddConstraint(model_name, constraint)


def test_unique_constraint_concurrently_refuses_anything_but_a_unique_constraint():
    with pytest.raises(ValueError, match="takes a UniqueConstraint, not CheckConstraint"):
        AddUniqueConstraintConcurrently(
            "parent", models.CheckConstraint(condition=models.Q(pk__gt=0), name="test_c")
        )


def test_a_deferred_unique_constraint_is_checked_at_commit():
    first, second = parent_create(name="A"), parent_create(name="B")
    constraint_ = models.UniqueConstraint(
        fields=["name"], name="test_unique_name", deferrable=models.Deferrable.DEFERRED
    )
    forwards(AddUniqueConstraintConcurrently("parent", constraint_))
    with transaction.atomic():  # a swap passes through a duplicate within the transaction
        Parent.objects.filter(pk=first.pk).update(name="B")
        Parent.objects.filter(pk=second.pk).update(name="A")
    with pytest.raises(IntegrityError), transaction.atomic():
        Parent.objects.filter(pk=first.pk).update(name="A")


# SafeRemoveField and SafeDeleteModel: the state first, the database a deploy later -------------


def test_safe_remove_field_forgets_the_field_then_drops_the_column_and_reverses(child_table):
    pending = SafeRemoveField("scratchchild", "note", stage="pending")
    delete = SafeRemoveField("scratchchild", "note", stage="delete")
    with statements_run() as sql:
        before, forgotten = forwards(pending, child_table)
    assert "note" not in forgotten.models["dbops_testapp", "scratchchild"].fields
    assert not [s for s in sql if s.startswith("ALTER")]  # the column stays for the old code
    assert column_exists("dbops_testapp_scratchchild", "note")
    _, dropped = forwards(delete, forgotten)
    assert not column_exists("dbops_testapp_scratchchild", "note")
    backwards(delete, forgotten, dropped)  # the data is gone: nothing to put back here
    backwards(pending, before, forgotten)
    assert column_exists("dbops_testapp_scratchchild", "note")  # back, empty


def column_exists(table, column):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = %s",
            [table, column],
        )
        return cursor.fetchone() is not None


def test_safe_remove_field_refuses_what_new_code_could_not_live_with(child_table):
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE dbops_testapp_scratchchild ALTER COLUMN note SET NOT NULL")
    with pytest.raises(MigrationBlocked, match="NOT NULL without a database default"):
        forwards(SafeRemoveField("scratchchild", "note", stage="pending"), child_table)
    parent = parent_create()
    insert_child(parent.pk)
    forwards(AddForeignKeyNotValid("scratchchild", "parent", "scratch_parent_fk"), child_table)
    with connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE dbops_testapp_scratchchild ALTER COLUMN parent_id DROP NOT NULL"
        )
    with pytest.raises(MigrationBlocked, match="foreign key constraint \\(scratch_parent_fk\\)"):
        forwards(SafeRemoveField("scratchchild", "parent", stage="pending"), child_table)


def test_the_delete_stage_refuses_to_run_before_the_pending_stage(child_table):
    with pytest.raises(MigrationBlocked, match="delete stage runs before the pending stage"):
        forwards(SafeRemoveField("scratchchild", "note", stage="delete"), child_table)
    assert column_exists("dbops_testapp_scratchchild", "note")
    with pytest.raises(MigrationBlocked, match="delete stage runs before the pending stage"):
        forwards(SafeDeleteModel("ScratchChild", stage="delete"), child_table)


def test_safe_delete_model_forgets_the_model_then_drops_the_table_and_reverses(child_table):
    pending = SafeDeleteModel("ScratchChild", stage="pending")
    delete = SafeDeleteModel("ScratchChild", stage="delete")
    before, forgotten = forwards(pending, child_table)
    assert ("dbops_testapp", "scratchchild") not in forgotten.models
    assert table_exists("dbops_testapp_scratchchild")
    _, dropped = forwards(delete, forgotten)
    assert not table_exists("dbops_testapp_scratchchild")
    backwards(delete, forgotten, dropped)
    backwards(pending, before, forgotten)
    assert table_exists("dbops_testapp_scratchchild")


def table_exists(table):
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
        return cursor.fetchone()[0]


@pytest.mark.parametrize("operation", [SafeRemoveField, SafeDeleteModel])
def test_the_two_stage_operations_refuse_an_unknown_stage(operation):
    args = ("scratchchild", "note") if operation is SafeRemoveField else ("ScratchChild",)
    with pytest.raises(ValueError, match="stage must be 'pending' or 'delete'"):
        operation(*args, stage="later")
