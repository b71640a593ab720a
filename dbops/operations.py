"""Migration operations that change large, busy tables without blocking their traffic.

Every statement they run goes through the migration guard (``dbops.migration_guard``), the same
one ``manage.py migrate`` puts around Django's own operations: a statement that takes a lock
blocking reads or writes runs under a short ``lock_timeout``, retried with backoff, and a
``statement_timeout`` bounding how long it holds the lock; a ``CONCURRENTLY`` build or a
``VALIDATE CONSTRAINT`` blocks no one, so it runs with neither, and a finished build is never
thrown away. ``lock_timeout_ms`` and ``attempts`` on an operation replace the settings
(``DBOPS["MIGRATION_LOCK_TIMEOUT_MS"]``, ``["MIGRATION_LOCK_ATTEMPTS"]``) for its statements.

The concurrent ones run outside a transaction (``atomic = False`` on the migration) and refuse
otherwise, with an error that says so: inside a transaction a concurrent index cannot be built at
all, and every lock taken would be held until the whole migration commits.

- ``AddIndexConcurrently`` / ``RemoveIndexConcurrently``: CREATE/DROP INDEX CONCURRENTLY; a
  leftover INVALID index of the same name (a build that failed or was killed) is dropped first.
- ``AddUniqueConstraintConcurrently``: the unique index built concurrently, then attached as the
  constraint (``ADD CONSTRAINT ... UNIQUE USING INDEX``, with its ``deferrable`` and
  ``nulls_distinct``), which takes its lock only briefly; with ``condition``, ``include``,
  ``opclasses`` or expressions it stays a unique index, as Django itself makes it.
- ``AddForeignKeyNotValid`` then ``ValidateConstraintWithLockTimeout``: the foreign key checks new
  rows at once; old rows are checked later under a lock that does not block writes.
- ``SetNotNullPhased``: on PostgreSQL 18, ``ADD NOT NULL ... NOT VALID`` then ``VALIDATE``;
  before 18, CHECK (col IS NOT NULL) NOT VALID, VALIDATE, SET NOT NULL (which trusts the valid
  check and skips its scan), drop the check. Never removes a NOT NULL that was there.
- ``SafeRemoveField`` / ``SafeDeleteModel``: a column or table dropped in two deploys, the
  migration state first (code stops using it), the database after (Sentry's pattern).
- ``RequireNoNulls``: stop before any lock when a backfill is not finished, naming the command.

Every operation deconstructs to all of its arguments (defaults left out), so a migration written
by ``makemigrations``, ``squashmigrations`` or ``MigrationWriter`` runs with the same values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.contrib.postgres.operations import AddIndexConcurrently as DjangoAddIndexConcurrently
from django.contrib.postgres.operations import NotInTransactionMixin
from django.contrib.postgres.operations import (
    RemoveIndexConcurrently as DjangoRemoveIndexConcurrently,
)
from django.contrib.postgres.operations import ValidateConstraint as DjangoValidateConstraint
from django.db import router
from django.db.backends.utils import truncate_name
from django.db.migrations.operations.base import Operation
from django.db.models import Deferrable, UniqueConstraint

from dbops.exceptions import MigrationBlocked, OperationNotSupported
from dbops.migration_guard import migration_guard

__all__ = [
    "AddForeignKeyNotValid",
    "AddIndexConcurrently",
    "AddUniqueConstraintConcurrently",
    "MigrationBlocked",
    "RemoveIndexConcurrently",
    "RequireNoNulls",
    "SafeDeleteModel",
    "SafeRemoveField",
    "SetNotNullPhased",
    "ValidateConstraintWithLockTimeout",
]

logger = logging.getLogger("dbops.migrations")

# None: the settings (DBOPS["MIGRATION_LOCK_TIMEOUT_MS"], DBOPS["MIGRATION_LOCK_ATTEMPTS"]).
DEFAULT_LOCK_TIMEOUT_MS = None
DEFAULT_ATTEMPTS = None

# The two stages of SafeRemoveField and SafeDeleteModel.
PENDING = "pending"
DELETE = "delete"


class TimeoutsMixin:
    """``lock_timeout_ms`` and ``attempts`` for the operation's statements, and ``_run``, which
    runs them through the migration guard (installed here when ``migrate`` has not).

    ``deconstruct()`` returns the names in ``arguments`` (those in ``optional_arguments`` only when
    set) plus ``lock_timeout_ms`` and ``attempts`` when they are given. Each operation spells them
    out in its own ``__init__`` rather than passing ``**kwargs`` through: ``MigrationWriter`` writes
    only the keyword arguments it finds in the signature, and would silently drop the others.
    """

    arguments: tuple[str, ...] = ()
    optional_arguments: frozenset[str] = frozenset()

    def __init__(self, *args, lock_timeout_ms=None, attempts=None, **kwargs):
        for name, value in (("lock_timeout_ms", lock_timeout_ms), ("attempts", attempts)):
            if value is not None and (isinstance(value, bool) or int(value) < 1):
                raise ValueError(f"{self.__class__.__name__}: {name} must be >= 1, not {value!r}")
        super().__init__(*args, **kwargs)
        self.lock_timeout_ms = lock_timeout_ms
        self.attempts = attempts

    def deconstruct(self):
        kwargs = {
            name: getattr(self, name)
            for name in self.arguments
            if name not in self.optional_arguments or getattr(self, name) is not None
        }
        if self.lock_timeout_ms is not None:
            kwargs["lock_timeout_ms"] = self.lock_timeout_ms
        if self.attempts is not None:
            kwargs["attempts"] = self.attempts
        return self.__class__.__name__, [], kwargs

    def _run(self, schema_editor, statements: Callable[[], None], what: str) -> None:
        """Run ``statements`` through the guard, described as ``what`` in its messages."""
        with (
            migration_guard(schema_editor.connection) as guard,
            guard.step(what, lock_timeout_ms=self.lock_timeout_ms, attempts=self.attempts),
        ):
            statements()

    def _execute(self, schema_editor, sql: str, params=None) -> None:
        schema_editor.execute(sql, params)


class SafeOperationMixin(NotInTransactionMixin, TimeoutsMixin):
    """An operation that must run outside a transaction. ``NotInTransactionMixin`` (Django's)
    refuses a transaction with "set atomic = False on the migration"."""

    def _field_state_change(self, app_label, state, **attributes) -> None:
        """In the migration state, the operation's field with ``attributes`` changed."""
        model_state = state.models[app_label, self.model_name.lower()]
        field = model_state.fields[self.field_name].clone()
        for name, value in attributes.items():
            setattr(field, name, value)
        state.alter_field(app_label, self.model_name.lower(), self.field_name, field, True)

    def _model(self, app_label, schema_editor, state):
        """The operation's model in ``state``, once it is sure to run outside a transaction; None
        when a router keeps the model off this database."""
        self._ensure_not_in_transaction(schema_editor)
        model = state.apps.get_model(app_label, self.model_name)
        return model if self.allow_migrate_model(schema_editor.connection.alias, model) else None


# Catalog questions --------------------------------------------------------------------------


def _one(connection, sql: str, params) -> tuple | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def index_state(connection, name: str) -> str | None:
    """'valid', 'invalid' or None (no such index) for an index name in the current schema."""
    row = _one(
        connection,
        """
            SELECT i.indisvalid
              FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relname = %s AND n.nspname = ANY(current_schemas(false))
        """,
        [name],
    )
    if row is None:
        return None
    return "valid" if row[0] else "invalid"


def constraint_exists(connection, table: str, name: str) -> bool:
    return (
        _one(
            connection,
            "SELECT 1 FROM pg_constraint WHERE conname = %s AND conrelid = %s::regclass",
            [name, table],
        )
        is not None
    )


def table_exists(connection, table: str) -> bool:
    return _one(connection, "SELECT to_regclass(%s) IS NOT NULL", [table])[0]


def column_state(connection, table: str, column: str) -> tuple[int, bool, bool] | None:
    """(attnum, NOT NULL, has a default) of a column; None when there is no such column."""
    return _one(
        connection,
        "SELECT attnum, attnotnull, atthasdef FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attname = %s AND attnum > 0 AND NOT attisdropped",
        [table, column],
    )


def not_null_constraint(connection, table: str, attnum: int) -> tuple[str, bool] | None:
    """(name, validated) of the NOT NULL constraint of a column (PostgreSQL 18 catalogs them)."""
    return _one(
        connection,
        "SELECT conname, convalidated FROM pg_constraint"
        " WHERE conrelid = %s::regclass AND contype = 'n' AND conkey = ARRAY[%s]::int2[]",
        [table, attnum],
    )


def foreign_keys_of(connection, table: str, attnum: int) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname FROM pg_constraint"
            " WHERE conrelid = %s::regclass AND contype = 'f' AND %s = ANY(conkey)",
            [table, attnum],
        )
        return [row[0] for row in cursor.fetchall()]


# Indexes ------------------------------------------------------------------------------------


class _ConcurrentIndexBuild(SafeOperationMixin):
    def _build(self, schema_editor, name: str, create: Callable[[], None]) -> None:
        connection = schema_editor.connection
        quoted = schema_editor.quote_name(name)

        def statements():
            state = index_state(connection, name)
            if state == "invalid":
                # Left by an earlier build that failed or was killed: useless, and in the way.
                logger.warning("dropping INVALID index %s before building it again", name)
                self._execute(schema_editor, f"DROP INDEX CONCURRENTLY IF EXISTS {quoted}")
            elif state == "valid":
                logger.info("index %s already exists and is valid; not building it again", name)
                return
            create()

        self._run(schema_editor, statements, f"building index {name}")

    def _drop(self, schema_editor, name: str) -> None:
        quoted = schema_editor.quote_name(name)
        self._run(
            schema_editor,
            lambda: self._execute(schema_editor, f"DROP INDEX CONCURRENTLY IF EXISTS {quoted}"),
            f"dropping index {name}",
        )


class AddIndexConcurrently(_ConcurrentIndexBuild, DjangoAddIndexConcurrently):
    """Django's AddIndexConcurrently, with no timeout on the build, INVALID-leftover cleanup."""

    arguments = ("model_name", "index")

    def __init__(self, model_name, index, *, lock_timeout_ms=None, attempts=None):
        super().__init__(model_name, index, lock_timeout_ms=lock_timeout_ms, attempts=attempts)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = self._model(app_label, schema_editor, to_state)
        if model is not None:
            self._build(
                schema_editor,
                self.index.name,
                lambda: schema_editor.add_index(model, self.index, concurrently=True),
            )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        model = self._model(app_label, schema_editor, from_state)
        if model is not None:
            self._drop(schema_editor, self.index.name)


class RemoveIndexConcurrently(_ConcurrentIndexBuild, DjangoRemoveIndexConcurrently):
    """Django's RemoveIndexConcurrently through the guard; reversible."""

    arguments = ("model_name", "name")

    def __init__(self, model_name, name, *, lock_timeout_ms=None, attempts=None):
        super().__init__(model_name, name, lock_timeout_ms=lock_timeout_ms, attempts=attempts)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = self._model(app_label, schema_editor, from_state)
        if model is not None:
            self._drop(schema_editor, self.name)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        model = self._model(app_label, schema_editor, to_state)
        if model is not None:
            index = to_state.models[app_label, self.model_name_lower].get_index_by_name(self.name)
            self._build(
                schema_editor,
                self.name,
                lambda: schema_editor.add_index(model, index, concurrently=True),
            )


_NULLS = {None: "", True: " NULLS DISTINCT", False: " NULLS NOT DISTINCT"}
_DEFERRABLE = {
    None: "",
    Deferrable.DEFERRED: " DEFERRABLE INITIALLY DEFERRED",
    Deferrable.IMMEDIATE: " DEFERRABLE INITIALLY IMMEDIATE",
}
_UNIQUE_INDEX = "CREATE UNIQUE INDEX "


class AddUniqueConstraintConcurrently(_ConcurrentIndexBuild, Operation):
    """A ``UniqueConstraint`` whose index is built concurrently; every option it takes kept.

    On fields, the index is attached as the constraint (``UNIQUE USING INDEX``, a brief lock),
    with its ``deferrable`` and ``nulls_distinct``: the catalog ends as ``AddConstraint`` leaves
    it. With ``condition``, ``include``, ``opclasses`` or expressions Django makes a unique index,
    not a constraint (PostgreSQL cannot attach such an index), and so does this operation, from
    Django's own SQL with CONCURRENTLY added. ``nulls_distinct`` needs PostgreSQL 15.
    """

    reversible = True
    arguments = ("model_name", "constraint")

    def __init__(self, model_name, constraint, *, lock_timeout_ms=None, attempts=None):
        if not isinstance(constraint, UniqueConstraint):
            raise ValueError(
                "AddUniqueConstraintConcurrently takes a UniqueConstraint, not "
                f"{type(constraint).__name__}"
            )
        super().__init__(lock_timeout_ms=lock_timeout_ms, attempts=attempts)
        self.model_name = model_name
        self.constraint = constraint

    @property
    def index_only(self) -> bool:
        c = self.constraint
        return bool(c.condition or c.include or c.opclasses or c.expressions)

    def state_forwards(self, app_label, state):
        state.add_constraint(app_label, self.model_name.lower(), self.constraint)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = self._model(app_label, schema_editor, to_state)
        if model is None:
            return
        features = schema_editor.connection.features
        if self.constraint.nulls_distinct is not None and not (
            features.supports_nulls_distinct_unique_constraints
        ):
            raise OperationNotSupported(
                f"{self.constraint.name}: nulls_distinct needs PostgreSQL 15 or newer."
            )
        name, q = self.constraint.name, schema_editor.quote_name
        if self.index_only:
            sql = str(self.constraint.create_sql(model, schema_editor))
            if not sql.startswith(_UNIQUE_INDEX):
                raise AssertionError(f"unexpected SQL for a unique index: {sql}")
            sql = f"{_UNIQUE_INDEX}CONCURRENTLY {sql.removeprefix(_UNIQUE_INDEX)}"
            self._build(schema_editor, name, lambda: self._execute(schema_editor, sql))
            return
        table = model._meta.db_table
        if constraint_exists(schema_editor.connection, table, name):
            return
        columns = ", ".join(q(model._meta.get_field(f).column) for f in self.constraint.fields)
        index_sql = (
            f"{_UNIQUE_INDEX}CONCURRENTLY {q(name)} ON {q(table)} ({columns})"
            f"{_NULLS[self.constraint.nulls_distinct]}"
        )
        attach_sql = (
            f"ALTER TABLE {q(table)} ADD CONSTRAINT {q(name)} UNIQUE USING INDEX {q(name)}"
            f"{_DEFERRABLE[self.constraint.deferrable]}"
        )
        self._build(schema_editor, name, lambda: self._execute(schema_editor, index_sql))
        self._run(
            schema_editor,
            lambda: self._execute(schema_editor, attach_sql),
            f"attaching unique constraint {name}",
        )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        model = self._model(app_label, schema_editor, from_state)
        if model is None:
            return
        if self.index_only:
            self._drop(schema_editor, self.constraint.name)
            return
        q = schema_editor.quote_name
        table, name = model._meta.db_table, self.constraint.name
        self._run(
            schema_editor,
            lambda: self._execute(
                schema_editor, f"ALTER TABLE {q(table)} DROP CONSTRAINT IF EXISTS {q(name)}"
            ),
            f"dropping unique constraint {name}",
        )

    def describe(self):
        return f"Create unique constraint {self.constraint.name} concurrently on {self.model_name}"

    @property
    def migration_name_fragment(self):
        return f"{self.model_name.lower()}_{self.constraint.name.lower()}"


# Foreign keys and validation ---------------------------------------------------------------


class AddForeignKeyNotValid(SafeOperationMixin, Operation):
    """Add the database constraint of an existing foreign key field NOT VALID.

    The field exists already (added with ``db_constraint=False``, or created before the
    constraint was wanted); this adds its constraint so new rows are checked at once, and marks
    the field ``db_constraint=True`` in the migration state. Old rows are checked by a separate
    ``ValidateConstraintWithLockTimeout`` in a later migration, which does not block writes.
    """

    reversible = True
    arguments = ("model_name", "field_name", "name")

    def __init__(
        self,
        model_name,
        field_name,
        name,
        *,
        lock_timeout_ms=None,
        attempts=None,
    ):
        super().__init__(lock_timeout_ms=lock_timeout_ms, attempts=attempts)
        self.model_name = model_name
        self.field_name = field_name
        self.name = name

    def state_forwards(self, app_label, state):
        self._field_state_change(app_label, state, db_constraint=True)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = self._model(app_label, schema_editor, to_state)
        if model is None:
            return
        field = model._meta.get_field(self.field_name)
        target = field.target_field
        q = schema_editor.quote_name
        table = model._meta.db_table
        if constraint_exists(schema_editor.connection, table, self.name):
            return
        sql = (
            f"ALTER TABLE {q(table)} ADD CONSTRAINT {q(self.name)} FOREIGN KEY ({q(field.column)}) "
            f"REFERENCES {q(target.model._meta.db_table)} ({q(target.column)}) DEFERRABLE INITIALLY DEFERRED NOT VALID"
        )
        self._run(
            schema_editor,
            lambda: self._execute(schema_editor, sql),
            f"adding foreign key {self.name}",
        )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        model = self._model(app_label, schema_editor, from_state)
        if model is None:
            return
        q = schema_editor.quote_name
        sql = f"ALTER TABLE {q(model._meta.db_table)} DROP CONSTRAINT IF EXISTS {q(self.name)}"
        self._run(
            schema_editor,
            lambda: self._execute(schema_editor, sql),
            f"dropping foreign key {self.name}",
        )

    def describe(self):
        return f"Add foreign key {self.name} NOT VALID on {self.model_name}.{self.field_name}"


class ValidateConstraintWithLockTimeout(SafeOperationMixin, DjangoValidateConstraint):
    """VALIDATE CONSTRAINT: checks the old rows under SHARE UPDATE EXCLUSIVE, so writes go on.

    Django's ``ValidateConstraint`` (contrib.postgres) runs in the migration's transaction, which
    holds any lock an earlier operation took until it commits; this one runs outside a
    transaction. Its lock blocks no reads or writes, so the guard gives it no lock timeout and no
    statement timeout: the scan of a big table is never cancelled half way (the name is kept from
    when it had one; ``lock_timeout_ms`` applies to nothing here). Reversing it is a no-op: a
    validated constraint cannot be made NOT VALID again, and there is no need to.
    """

    reversible = True
    arguments = ("model_name", "name")

    def __init__(
        self,
        model_name,
        name,
        *,
        lock_timeout_ms=None,
        attempts=None,
    ):
        super().__init__(model_name, name, lock_timeout_ms=lock_timeout_ms, attempts=attempts)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = self._model(app_label, schema_editor, to_state)
        if model is None:
            return
        q = schema_editor.quote_name
        sql = f"ALTER TABLE {q(model._meta.db_table)} VALIDATE CONSTRAINT {q(self.name)}"
        self._run(
            schema_editor, lambda: self._execute(schema_editor, sql), f"validating {self.name}"
        )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        self._ensure_not_in_transaction(schema_editor)


# NOT NULL -----------------------------------------------------------------------------------


class SetNotNullPhased(SafeOperationMixin, Operation):
    """SET NOT NULL without a full-table scan under an ACCESS EXCLUSIVE lock.

    PostgreSQL 18 and newer (a column's NOT NULL is a catalogued constraint there, named
    ``<table>_<column>_not_null``, and can be added NOT VALID):

    1. ALTER TABLE ... ADD NOT NULL col NOT VALID        (brief lock, no scan; new rows checked)
    2. VALIDATE CONSTRAINT                                (scan, writes go on)

    Before 18:

    1. ADD CONSTRAINT <table>_<column>_nn_check CHECK (col IS NOT NULL) NOT VALID   (brief lock)
    2. VALIDATE CONSTRAINT                                (scan, writes go on)
    3. ALTER COLUMN ... SET NOT NULL                      (brief lock: the valid check proves it)
    4. DROP CONSTRAINT                                    (the column's NOT NULL now says it)

    Each phase is skipped when already done, so a run that stopped half way can run again. A
    column that is NOT NULL already is left as it is (a leftover check of this operation is
    dropped); the check is found by its name *and* its definition, so no other constraint is
    ever taken for it. Reversing drops the NOT NULL only when the field was nullable before.
    """

    reversible = True
    arguments = ("model_name", "field_name")

    def __init__(self, model_name, field_name, *, lock_timeout_ms=None, attempts=None):
        super().__init__(lock_timeout_ms=lock_timeout_ms, attempts=attempts)
        self.model_name = model_name
        self.field_name = field_name

    def state_forwards(self, app_label, state):
        self._field_state_change(app_label, state, null=False)

    @staticmethod
    def check_name(table: str, column: str) -> str:
        """The phased CHECK's name: not PostgreSQL 18's ``<table>_<column>_not_null``."""
        return truncate_name(f"{table}_{column}_nn_check", 63)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = self._model(app_label, schema_editor, to_state)
        if model is None:
            return
        table = model._meta.db_table
        column = model._meta.get_field(self.field_name).column
        connection = schema_editor.connection
        state = column_state(connection, table, column)
        if state is None:
            raise MigrationBlocked(f"{table} has no column {column}: nothing to set NOT NULL.")
        if connection.pg_version >= 180000:
            self._native(schema_editor, table, column, state[0])
        elif not state[1]:
            self._phased(schema_editor, table, column)
        self._drop_own_check(schema_editor, table, column)

    def _native(self, schema_editor, table: str, column: str, attnum: int) -> None:
        q, connection = schema_editor.quote_name, schema_editor.connection
        existing = not_null_constraint(connection, table, attnum)
        if existing is None:
            self._run(
                schema_editor,
                lambda: self._execute(
                    schema_editor, f"ALTER TABLE {q(table)} ADD NOT NULL {q(column)} NOT VALID"
                ),
                f"adding NOT NULL NOT VALID to {table}.{column}",
            )
            existing = not_null_constraint(connection, table, attnum)
        name, validated = existing
        if not validated:
            self._run(
                schema_editor,
                lambda: self._execute(
                    schema_editor, f"ALTER TABLE {q(table)} VALIDATE CONSTRAINT {q(name)}"
                ),
                f"validating {name}",
            )

    def _own_check(self, connection, table: str, column: str) -> tuple[bool, bool] | None:
        """(validated, is this operation's check) of the constraint with the check's name."""
        return _one(
            connection,
            "SELECT convalidated, contype = 'c' AND pg_get_expr(conbin, conrelid)"
            " = format('(%%I IS NOT NULL)', %s::text)"
            " FROM pg_constraint WHERE conname = %s AND conrelid = %s::regclass",
            [column, self.check_name(table, column), table],
        )

    def _phased(self, schema_editor, table: str, column: str) -> None:
        q, check = schema_editor.quote_name, self.check_name(table, column)
        found = self._own_check(schema_editor.connection, table, column)
        if found is not None and not found[1]:
            raise MigrationBlocked(
                f"{table} has a constraint named {check} that is not CHECK ({column} IS NOT "
                "NULL); rename it, then run migrate again."
            )
        steps = []
        if found is None:
            steps.append(
                (
                    f"ALTER TABLE {q(table)} ADD CONSTRAINT {q(check)} "
                    f"CHECK ({q(column)} IS NOT NULL) NOT VALID",
                    f"adding NOT VALID check {check}",
                )
            )
        if found is None or not found[0]:
            steps.append(
                (f"ALTER TABLE {q(table)} VALIDATE CONSTRAINT {q(check)}", f"validating {check}")
            )
        steps.append(
            (
                f"ALTER TABLE {q(table)} ALTER COLUMN {q(column)} SET NOT NULL",
                f"setting {table}.{column} NOT NULL",
            )
        )
        for sql, what in steps:
            self._run(schema_editor, lambda sql=sql: self._execute(schema_editor, sql), what)

    def _drop_own_check(self, schema_editor, table: str, column: str) -> None:
        found = self._own_check(schema_editor.connection, table, column)
        if found is None or not found[1]:
            return
        q, check = schema_editor.quote_name, self.check_name(table, column)
        self._run(
            schema_editor,
            lambda: self._execute(
                schema_editor, f"ALTER TABLE {q(table)} DROP CONSTRAINT IF EXISTS {q(check)}"
            ),
            f"dropping check {check}",
        )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        model = self._model(app_label, schema_editor, from_state)
        if model is None:
            return
        before = to_state.models[app_label, self.model_name.lower()].fields[self.field_name]
        if not before.null:
            return  # NOT NULL before this operation too: not this operation's to take away
        table = model._meta.db_table
        column = model._meta.get_field(self.field_name).column
        q = schema_editor.quote_name
        self._run(
            schema_editor,
            lambda: self._execute(
                schema_editor, f"ALTER TABLE {q(table)} ALTER COLUMN {q(column)} DROP NOT NULL"
            ),
            f"dropping NOT NULL on {table}.{column}",
        )

    def describe(self):
        return f"Set {self.model_name}.{self.field_name} NOT NULL in phases"


# Dropping a column or a table in two deploys ------------------------------------------------


def _stage_check(cls, stage: str) -> None:
    if stage not in (PENDING, DELETE):
        raise ValueError(f"{cls.__name__}: stage must be {PENDING!r} or {DELETE!r}, not {stage!r}")


class SafeRemoveField(TimeoutsMixin, Operation):
    """Remove a field in two deploys, so no running code ever reads a column that is gone.

    ``stage="pending"`` (deploy N) removes the field from the migration state only: the code of
    this deploy stops reading and writing the column, the column stays. It refuses (before
    anything changes) a column that new code's INSERTs would fail on: NOT NULL without a database
    default (make it nullable, or give it ``db_default``, first), or one with a foreign key
    constraint (drop it first: ``AlterField`` with ``db_constraint=False``).
    ``stage="delete"`` (deploy N+1, once no process runs the old code) drops the column:
    ``ALTER TABLE ... DROP COLUMN IF EXISTS``, a brief ACCESS EXCLUSIVE lock under the guard's
    lock timeout. Pass ``column`` when it is not the field's name (a foreign key: ``<name>_id``).

    Reversing the delete stage changes nothing (the data is gone); reversing the pending stage
    puts the field back in the state and, if the column is gone, adds it back (empty).
    """

    reversible = True
    reduces_to_sql = False
    arguments = ("model_name", "name", "stage", "column")
    optional_arguments = frozenset({"column"})

    def __init__(
        self, model_name, name, *, stage, column=None, lock_timeout_ms=None, attempts=None
    ):
        _stage_check(type(self), stage)
        super().__init__(lock_timeout_ms=lock_timeout_ms, attempts=attempts)
        self.model_name, self.name, self.stage, self.column = model_name, name, stage, column

    def state_forwards(self, app_label, state):
        if self.stage == PENDING:
            state.remove_field(app_label, self.model_name.lower(), self.name)

    def _table_and_column(self, app_label, state, field=None):
        model = state.apps.get_model(app_label, self.model_name)
        column = field.column if field is not None else (self.column or self.name)
        return model, model._meta.db_table, column

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model_state = from_state.models[app_label, self.model_name.lower()]
        if self.stage == PENDING:
            field = from_state.apps.get_model(app_label, self.model_name)._meta.get_field(self.name)
            model, table, column = self._table_and_column(app_label, from_state, field)
            if self.allow_migrate_model(schema_editor.connection.alias, model):
                self._pending_check(schema_editor.connection, table, column)
            return
        if self.name in model_state.fields:
            raise MigrationBlocked(
                f"{app_label}.{self.model_name}.{self.name}: the delete stage runs before the "
                f"pending stage. Apply SafeRemoveField(..., stage='{PENDING}') in an earlier "
                "deploy, then this one."
            )
        model, table, column = self._table_and_column(app_label, from_state)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            q = schema_editor.quote_name
            sql = f"ALTER TABLE {q(table)} DROP COLUMN IF EXISTS {q(column)}"
            self._run(
                schema_editor, lambda: self._execute(schema_editor, sql), f"dropping {column}"
            )

    def _pending_check(self, connection, table: str, column: str) -> None:
        state = column_state(connection, table, column)
        if state is None:
            return
        attnum, not_null, has_default = state
        problem = None
        if not_null and not has_default:
            problem = (
                "is NOT NULL without a database default: INSERTs of the code that no longer "
                "knows the field would fail. First make it null=True or give it db_default"
            )
        elif foreign_keys := foreign_keys_of(connection, table, attnum):
            problem = (
                f"has a foreign key constraint ({', '.join(foreign_keys)}), still checked and "
                "locking the other table. First drop it: AlterField with db_constraint=False"
            )
        if problem:
            raise MigrationBlocked(f"{table}.{column} {problem}, in its own migration.")

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if self.stage == DELETE:
            return
        model = to_state.apps.get_model(app_label, self.model_name)
        field = model._meta.get_field(self.name)
        table = model._meta.db_table
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if column_state(schema_editor.connection, table, field.column) is None:
            self._run(
                schema_editor,
                lambda: schema_editor.add_field(model, field),
                f"adding {field.column} back",
            )

    def describe(self):
        if self.stage == PENDING:
            return f"Remove field {self.name} from {self.model_name} (state; column kept)"
        return f"Drop the column of removed field {self.name} from {self.model_name}"

    @property
    def migration_name_fragment(self):
        return f"remove_{self.model_name.lower()}_{self.name.lower()}_{self.stage}"


class SafeDeleteModel(TimeoutsMixin, Operation):
    """Delete a model in two deploys, so no running code ever queries a table that is gone.

    ``stage="pending"`` removes the model from the migration state (the table stays);
    ``stage="delete"``, in a later deploy, drops the table (``DROP TABLE IF EXISTS``, a brief
    ACCESS EXCLUSIVE lock on it and on the tables its foreign keys point to, under the guard's
    lock timeout). Pass ``db_table`` when the table is not the default ``<app>_<model>``.
    Reversing: as ``SafeRemoveField`` (the pending stage recreates a dropped table, empty).
    """

    reversible = True
    reduces_to_sql = False
    arguments = ("name", "stage", "db_table")
    optional_arguments = frozenset({"db_table"})

    def __init__(self, name, *, stage, db_table=None, lock_timeout_ms=None, attempts=None):
        _stage_check(type(self), stage)
        super().__init__(lock_timeout_ms=lock_timeout_ms, attempts=attempts)
        self.name, self.stage, self.db_table = name, stage, db_table

    def state_forwards(self, app_label, state):
        if self.stage == PENDING:
            state.remove_model(app_label, self.name.lower())

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if self.stage == PENDING:
            return
        if (app_label, self.name.lower()) in from_state.models:
            raise MigrationBlocked(
                f"{app_label}.{self.name}: the delete stage runs before the pending stage. Apply "
                f"SafeDeleteModel(..., stage='{PENDING}') in an earlier deploy, then this one."
            )
        connection = schema_editor.connection
        if not self.allowed(connection.alias, app_label):
            return
        table = self.db_table or truncate_name(
            f"{app_label}_{self.name.lower()}", connection.ops.max_name_length()
        )
        sql = f"DROP TABLE IF EXISTS {schema_editor.quote_name(table)}"
        self._run(schema_editor, lambda: self._execute(schema_editor, sql), f"dropping {table}")

    def allowed(self, alias: str, app_label: str) -> bool:
        """The router's word, asked by name: the model has left the state."""
        return router.allow_migrate(alias, app_label, model_name=self.name.lower())

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if self.stage == DELETE:
            return
        model = to_state.apps.get_model(app_label, self.name)
        connection = schema_editor.connection
        if not self.allow_migrate_model(connection.alias, model):
            return
        if not table_exists(connection, model._meta.db_table):
            self._run(
                schema_editor,
                lambda: schema_editor.create_model(model),
                f"creating {model._meta.db_table} back",
            )

    def describe(self):
        if self.stage == PENDING:
            return f"Delete model {self.name} (state; table kept)"
        return f"Drop the table of deleted model {self.name}"

    @property
    def migration_name_fragment(self):
        return f"delete_{self.name.lower()}_{self.stage}"


# Backfill gate ------------------------------------------------------------------------------


class RequireNoNulls(Operation):
    """Stop the migration, before it takes any lock, while a column still has NULLs to backfill."""

    reversible = True
    reduces_to_sql = False

    def __init__(self, model_name, field_name, command):
        self.model_name = model_name
        self.field_name = field_name
        self.command = command

    def deconstruct(self):
        return (
            self.__class__.__name__,
            [],
            {"model_name": self.model_name, "field_name": self.field_name, "command": self.command},
        )

    def state_forwards(self, app_label, state):
        pass

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        column = model._meta.get_field(self.field_name).column
        q = schema_editor.quote_name
        with schema_editor.connection.cursor() as cursor:
            # A plain read (ACCESS SHARE): blocks nobody. EXISTS stops at the first NULL.
            cursor.execute(
                f"SELECT EXISTS (SELECT 1 FROM {q(model._meta.db_table)} WHERE {q(column)} IS NULL)"  # noqa: S608 (quoted)
            )
            if cursor.fetchone()[0]:
                raise MigrationBlocked(
                    f"{app_label}.{self.model_name}.{self.field_name} still has rows to fill, so this "
                    f"migration stopped before changing anything. Run:\n\n    {self.command}\n\n"
                    "then run migrate again."
                )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        pass

    def describe(self):
        return f"Require {self.model_name}.{self.field_name} to have no NULLs"
