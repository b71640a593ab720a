"""Each operation applied and reversed on real tables, outside a transaction, as migrate runs them."""

import inspect
import logging
import threading
from contextlib import contextmanager

import pytest
from django.core.management import call_command
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

from dbops import catalog
from dbops import operations as operations_module
from dbops.doctor import examine
from dbops.errors import LOCK_NOT_AVAILABLE, sqlstate
from dbops.operations import (
    DEFAULT_ATTEMPTS,
    DEFAULT_LOCK_TIMEOUT_MS,
    AddForeignKeyNotValid,
    AddIndexConcurrently,
    AddUniqueConstraintConcurrently,
    MigrationBlocked,
    RemoveIndexConcurrently,
    RequireNoNulls,
    SetNotNullPhased,
    ValidateConstraintWithLockTimeout,
    index_state,
)
from orders.models import Customer
from tests.factories import customer_create
from tests.helpers import raw_connection

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_leftover_schema():
    """Whatever a test built, even one that failed half way, is gone afterwards: an INVALID or
    stray test index left in a reused test database would fail the next run's health checks."""
    yield
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE conname LIKE 'test\\_%%'"
            " AND conrelid = 'orders_customer'::regclass"
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'ALTER TABLE orders_customer DROP CONSTRAINT IF EXISTS "{name}"')
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid"
            " WHERE i.indrelid = 'orders_customer'::regclass AND c.relname LIKE 'test\\_%%'"
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')
        cursor.execute(
            'CREATE INDEX CONCURRENTLY IF NOT EXISTS "customer_region" ON orders_customer (region)'
        )


@contextmanager
def statements_run():
    """Every SQL statement Django sends inside the block, in order."""
    sql = []

    def record(execute, statement, params, many, context):
        sql.append(" ".join(statement.split()))
        return execute(statement, params, many, context)

    with connection.execute_wrapper(record):
        yield sql


def current_state():
    return MigrationLoader(connection).project_state()


def forwards(operation, state=None, app_label="orders"):
    state = state or current_state()
    new_state = state.clone()
    operation.state_forwards(app_label, new_state)
    with connection.schema_editor(atomic=False) as editor:
        operation.database_forwards(app_label, editor, state, new_state)
    return state, new_state


def backwards(operation, state, new_state, app_label="orders"):
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
    op = AddIndexConcurrently("customer", models.Index(fields=["name"], name="test_customer_name"))
    state, new_state = forwards(op)
    assert index_state(connection, "test_customer_name") == "valid"
    backwards(op, state, new_state)
    assert index_state(connection, "test_customer_name") is None


def test_add_index_builds_concurrently_under_a_lock_timeout():
    op = AddIndexConcurrently("customer", models.Index(fields=["name"], name="test_customer_name"))
    with statements_run() as sql:
        forwards(op)
    builds = [s for s in sql if "CREATE INDEX" in s or "CREATE UNIQUE INDEX" in s]
    assert builds == [
        'CREATE INDEX CONCURRENTLY "test_customer_name" ON "orders_customer" ("name")'
    ]
    timeout = sql.index("SELECT current_setting(%s), set_config(%s, %s, false)")
    assert timeout < sql.index(builds[0])


def test_remove_index_drops_concurrently():
    op = RemoveIndexConcurrently("customer", "customer_region")
    with statements_run() as sql:
        state, new_state = forwards(op)
    assert [s for s in sql if "DROP INDEX" in s] == [
        'DROP INDEX CONCURRENTLY IF EXISTS "customer_region"'
    ]
    with statements_run() as sql:
        backwards(op, state, new_state)
    assert any(s.startswith('CREATE INDEX CONCURRENTLY "customer_region"') for s in sql)


def test_unique_constraint_builds_its_index_concurrently_then_attaches_it():
    customer_create(name="A")
    op = AddUniqueConstraintConcurrently(
        "customer", models.UniqueConstraint(fields=["name"], name="test_unique_name")
    )
    with statements_run() as sql:
        forwards(op)
    ddl = [s for s in sql if s.startswith(("CREATE", "ALTER", "DROP"))]
    assert ddl == [
        'CREATE UNIQUE INDEX CONCURRENTLY "test_unique_name" ON "orders_customer" ("name")',
        'ALTER TABLE "orders_customer" ADD CONSTRAINT "test_unique_name" UNIQUE USING INDEX "test_unique_name"',
    ]


def test_remove_index_concurrently_applies_and_reverses():
    op = RemoveIndexConcurrently("customer", "customer_region")
    state, new_state = forwards(op)
    assert index_state(connection, "customer_region") is None
    backwards(op, state, new_state)
    assert index_state(connection, "customer_region") == "valid"


@pytest.mark.parametrize(
    "operation",
    [
        AddIndexConcurrently("customer", models.Index(fields=["name"], name="test_customer_name")),
        AddUniqueConstraintConcurrently(
            "customer", models.UniqueConstraint(fields=["name"], name="test_unique_name")
        ),
        SetNotNullPhased("customer", "name"),
        ValidateConstraintWithLockTimeout("customer", "customer_email_normalized_unique"),
        RemoveIndexConcurrently("customer", "customer_region"),
        AddForeignKeyNotValid("order", "customer", "test_order_customer_fk"),
    ],
    ids=lambda op: op.__class__.__name__,
)
def test_operations_refuse_to_run_inside_a_transaction(operation):
    state = current_state()
    new_state = state.clone()
    operation.state_forwards("orders", new_state)
    with transaction.atomic(), connection.schema_editor(atomic=False) as editor:
        with pytest.raises(NotSupportedError, match="set atomic = False on the migration"):
            operation.database_forwards("orders", editor, state, new_state)


def test_leftover_invalid_index_is_dropped_and_built_again():
    customer_create(region="north")
    customer_create(region="north")
    with connection.cursor() as cursor, pytest.raises(IntegrityError):
        # A concurrent build that fails (duplicates) leaves its index behind, INVALID.
        cursor.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY test_region_idx ON orders_customer (region)"
        )
    assert index_state(connection, "test_region_idx") == "invalid"
    assert catalog.invalid_indexes() == [{"index": "test_region_idx", "table": "orders_customer"}]

    op = AddIndexConcurrently("customer", models.Index(fields=["region"], name="test_region_idx"))
    state, new_state = forwards(op)
    assert index_state(connection, "test_region_idx") == "valid"
    assert catalog.invalid_indexes() == []
    backwards(op, state, new_state)


def test_lock_timeout_is_retried_until_the_other_transaction_lets_go(caplog):
    holder = raw_connection(autocommit=False)
    holder.execute("LOCK TABLE orders_customer IN SHARE ROW EXCLUSIVE MODE")
    op = AddIndexConcurrently(
        "customer",
        models.Index(fields=["name"], name="test_customer_name"),
        lock_timeout_ms=100,
        attempts=10,
    )
    op.base_delay = 0.05
    first_timeout = threading.Event()

    class ReleaseOnFirstRetry(logging.Handler):
        def emit(self, record):
            first_timeout.set()

    handler = ReleaseOnFirstRetry()
    logging.getLogger("dbops.migrations").addHandler(handler)
    releaser = threading.Thread(target=lambda: (first_timeout.wait(10), holder.rollback()))
    releaser.start()
    try:
        state, new_state = forwards(op)
    finally:
        releaser.join()
        holder.close()
        logging.getLogger("dbops.migrations").removeHandler(handler)
    assert first_timeout.is_set()
    assert index_state(connection, "test_customer_name") == "valid"
    backwards(op, state, new_state)


def test_lock_that_never_goes_stops_the_migration_with_what_to_do():
    holder = raw_connection(autocommit=False)
    holder.execute("LOCK TABLE orders_customer IN SHARE ROW EXCLUSIVE MODE")
    op = AddIndexConcurrently(
        "customer",
        models.Index(fields=["name"], name="test_customer_name"),
        lock_timeout_ms=50,
        attempts=2,
    )
    op.base_delay = 0.01
    try:
        with pytest.raises(MigrationBlocked, match="db_doctor"):
            forwards(op)
    finally:
        holder.rollback()
        holder.close()
    # Whatever the killed build left is cleaned up by the next run.
    state, new_state = forwards(op)
    assert index_state(connection, "test_customer_name") == "valid"
    backwards(op, state, new_state)


def test_unique_constraint_concurrently_applies_and_reverses():
    customer_create(name="A")
    customer_create(name="B")
    op = AddUniqueConstraintConcurrently(
        "customer", models.UniqueConstraint(fields=["name"], name="test_unique_name")
    )
    state, new_state = forwards(op)
    assert constraint("test_unique_name") == "valid"
    with pytest.raises(IntegrityError):
        customer_create(name="A")
    backwards(op, state, new_state)
    assert constraint("test_unique_name") is None
    assert index_state(connection, "test_unique_name") is None


@pytest.fixture
def child_table():
    """A scratch model with an unconstrained foreign key and a nullable column."""
    state = current_state()
    state.add_model(
        ModelState(
            "orders",
            "ScratchChild",
            [
                ("id", models.BigAutoField(primary_key=True)),
                (
                    "customer",
                    models.ForeignKey(
                        "orders.customer", on_delete=models.CASCADE, db_constraint=False
                    ),
                ),
                ("note", models.CharField(max_length=20, null=True)),
            ],
        )
    )
    model = state.apps.get_model("orders", "ScratchChild")
    with connection.schema_editor() as editor:
        editor.create_model(model)
    yield state
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS orders_scratchchild")


def insert_child(customer_id, note="x"):
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO orders_scratchchild (customer_id, note) VALUES (%s, %s)",
            [customer_id, note],
        )


def test_foreign_key_not_valid_checks_new_rows_then_validates_old_ones(child_table):
    customer = customer_create()
    insert_child(customer.pk)
    insert_child(999_999)  # an orphan from before the constraint
    add = AddForeignKeyNotValid("scratchchild", "customer", "scratch_customer_fk")
    state, new_state = forwards(add, child_table)
    assert constraint("scratch_customer_fk") == "not valid"
    assert new_state.models["orders", "scratchchild"].fields["customer"].db_constraint is True
    with pytest.raises(IntegrityError):
        insert_child(888_888)  # new rows are checked at once

    validate = ValidateConstraintWithLockTimeout("scratchchild", "scratch_customer_fk")
    with pytest.raises(IntegrityError):
        forwards(validate, new_state)  # the old orphan fails validation
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM orders_scratchchild WHERE customer_id = 999999")
    forwards(validate, new_state)
    assert constraint("scratch_customer_fk") == "valid"
    backwards(add, state, new_state)
    assert constraint("scratch_customer_fk") is None


def test_set_not_null_in_phases_applies_resumes_and_reverses(child_table):
    customer = customer_create()
    insert_child(customer.pk, "a")
    insert_child(customer.pk, None)
    op = SetNotNullPhased("scratchchild", "note")
    with pytest.raises(IntegrityError):
        forwards(op, child_table)  # VALIDATE finds the NULL; the column is untouched
    assert column_nullable("orders_scratchchild", "note")
    assert constraint("orders_scratchchild_note_not_null") == "not valid"

    with connection.cursor() as cursor:
        cursor.execute("UPDATE orders_scratchchild SET note = 'b' WHERE note IS NULL")
    state, new_state = forwards(op, child_table)  # picks up where it stopped
    assert not column_nullable("orders_scratchchild", "note")
    assert constraint("orders_scratchchild_note_not_null") is None
    assert new_state.models["orders", "scratchchild"].fields["note"].null is False
    backwards(op, state, new_state)
    assert column_nullable("orders_scratchchild", "note")


def test_set_not_null_is_proven_by_the_validated_check_without_a_scan(child_table):
    """SET NOT NULL scans the whole table under ACCESS EXCLUSIVE unless a valid CHECK proves it;
    PostgreSQL says so at DEBUG1, which the connection is asked to pass on here."""
    customer = customer_create()
    insert_child(customer.pk, "a")
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
    check = '"orders_scratchchild_note_not_null"'
    assert ddl == [
        f'ALTER TABLE "orders_scratchchild" ADD CONSTRAINT {check} CHECK ("note" IS NOT NULL) NOT VALID',
        f'ALTER TABLE "orders_scratchchild" VALIDATE CONSTRAINT {check}',
        'ALTER TABLE "orders_scratchchild" ALTER COLUMN "note" SET NOT NULL',
        f'ALTER TABLE "orders_scratchchild" DROP CONSTRAINT IF EXISTS {check}',
    ]
    assert any("sufficient to prove that it does not contain nulls" in n for n in notices), notices


def test_contract_migration_stops_before_any_lock_until_the_backfill_is_done(capsys):
    try:
        call_command("migrate", "orders", "0002", verbosity=0)
        assert constraint("customer_email_normalized_unique") is None
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO orders_customer (name, email, region, created_at) VALUES ('Legacy', ' Old@Example.COM ', 'north', now())"
            )
        findings = {f.check: f for f in examine()}
        assert not findings["migrations"].ok

        with pytest.raises(MigrationBlocked) as excinfo:
            call_command("migrate", "orders", verbosity=0)
        assert (
            'backfill_column orders.Customer email_normalized --expression "lower(btrim(email))"'
            in str(excinfo.value)
        )
        assert constraint("customer_email_normalized_unique") is None
        assert column_nullable("orders_customer", "email_normalized")

        call_command(
            "backfill_column",
            "orders.Customer",
            "email_normalized",
            "--expression",
            "lower(btrim(email))",
            verbosity=0,
        )
        call_command("migrate", "orders", verbosity=0)
        assert constraint("customer_email_normalized_unique") == "valid"
        assert not column_nullable("orders_customer", "email_normalized")
        assert Customer.objects.get(name="Legacy").email_normalized == "old@example.com"
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE orders_customer SET email_normalized = lower(btrim(email)) WHERE email_normalized IS NULL"
            )
        call_command("migrate", verbosity=0)


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
    customer = customer_create()
    insert_child(customer.pk, "a")
    insert_child(customer.pk, None)
    command = "python manage.py backfill_column orders.ScratchChild note --value n/a"
    op = RequireNoNulls("scratchchild", "note", command)
    with (
        writers_and_readers_at_work("orders_scratchchild"),
        pytest.raises(MigrationBlocked) as excinfo,
    ):
        forwards(op, child_table)
    assert command in str(excinfo.value)
    assert "orders.scratchchild.note still has rows to fill" in str(excinfo.value)
    assert "stopped before changing anything" in str(excinfo.value)


def test_require_no_nulls_lets_the_migration_go_on_once_no_null_is_left(child_table):
    customer = customer_create()
    insert_child(customer.pk, "a")
    op = RequireNoNulls("scratchchild", "note", "python manage.py backfill_column x y")
    with writers_and_readers_at_work("orders_scratchchild"):
        forwards(op, child_table)
    assert column_nullable("orders_scratchchild", "note")  # it checks; it changes nothing


# Every operation with every argument set to something other than its default: a migration written
# with these must come back with the same arguments, or a squashed or regenerated migration would
# silently run with other timeouts.
NON_DEFAULT_OPERATIONS = [
    AddIndexConcurrently(
        "customer",
        models.Index(fields=["name"], name="rt_customer_name"),
        lock_timeout_ms=1234,
        attempts=7,
    ),
    RemoveIndexConcurrently("customer", "customer_region", lock_timeout_ms=2345, attempts=2),
    AddUniqueConstraintConcurrently(
        "customer",
        models.UniqueConstraint(fields=["name"], name="rt_unique_name"),
        lock_timeout_ms=3456,
        attempts=3,
    ),
    AddForeignKeyNotValid(
        "order", "customer", "rt_order_customer_fk", lock_timeout_ms=45, attempts=9
    ),
    ValidateConstraintWithLockTimeout(
        "order", "rt_order_customer_fk", lock_timeout_ms=5678, attempts=4
    ),
    SetNotNullPhased("customer", "name", lock_timeout_ms=6789, attempts=6),
    RequireNoNulls("customer", "email_normalized", "python manage.py backfill_column x y"),
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
    migration = Migration("0099_round_trip", "orders")
    migration.operations = operations
    source = MigrationWriter(migration).as_string()
    namespace = {}
    exec(compile(source, "0099_round_trip.py", "exec"), namespace)  # noqa: S102 (our own writer's output)
    return source, namespace["Migration"]("0099_round_trip", "orders").operations


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
    source, [loaded] = written_and_loaded([SetNotNullPhased("customer", "name")])
    assert "lock_timeout_ms" not in source and "attempts" not in source
    assert (loaded.lock_timeout_ms, loaded.attempts) == (DEFAULT_LOCK_TIMEOUT_MS, DEFAULT_ATTEMPTS)


@pytest.mark.parametrize("bad", [{"lock_timeout_ms": 0}, {"attempts": 0}])
def test_operations_refuse_a_timeout_or_attempts_below_one(bad):
    with pytest.raises(ValueError, match="must be >= 1"):
        SetNotNullPhased("customer", "name", **bad)
