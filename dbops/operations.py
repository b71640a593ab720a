"""Migration operations that change large, busy tables without blocking their traffic.

Each runs outside a transaction (``atomic = False`` on the migration) and refuses otherwise, with an
error that says so: inside a transaction, a concurrent index cannot be built at all, and every lock
taken would be held until the whole migration commits. Every DDL statement runs under a short
``lock_timeout``: a migration waiting behind a long transaction for its lock would otherwise queue
every reader and writer of the table behind itself. A lock timeout is retried with backoff a
bounded number of times, then fails with a message saying what to look for.

- ``AddIndexConcurrently`` / ``RemoveIndexConcurrently``: CREATE/DROP INDEX CONCURRENTLY; a
  leftover INVALID index of the same name (a build that failed or was killed) is dropped first.
- ``AddUniqueConstraintConcurrently``: a unique index built concurrently, then attached as the
  constraint (``ADD CONSTRAINT ... UNIQUE USING INDEX``), which takes the lock only briefly.
- ``AddForeignKeyNotValid`` then ``ValidateConstraintWithLockTimeout``: the foreign key checks new
  rows at once; old rows are checked later under a lock that does not block writes.
- ``SetNotNullPhased``: CHECK (col IS NOT NULL) NOT VALID, VALIDATE, SET NOT NULL (which trusts
  the valid check and skips its full scan), drop the check.
- ``RequireNoNulls``: stop before any lock when a backfill is not finished, naming the command.

Every operation deconstructs to all of its arguments (defaults left out), so a migration written
by ``makemigrations``, ``squashmigrations`` or ``MigrationWriter`` runs with the same timeouts.
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
from django.core.management.base import CommandError
from django.db import OperationalError
from django.db.migrations.operations.base import Operation
from django.db.models import UniqueConstraint

from dbops.errors import LOCK_NOT_AVAILABLE, sqlstate
from dbops.retry import call_with_retries
from dbops.timeouts import lock_timeout

logger = logging.getLogger("dbops.migrations")

DEFAULT_LOCK_TIMEOUT_MS = 3000
DEFAULT_ATTEMPTS = 5


class MigrationBlocked(CommandError):
    """The migration cannot go on yet; the message says what to run first (no traceback)."""


class SafeOperationMixin(NotInTransactionMixin):
    """Outside a transaction only; each statement under ``lock_timeout``, lock timeouts retried.

    ``NotInTransactionMixin`` (Django's) refuses a transaction with "set atomic = False on the
    migration". ``deconstruct()`` returns the names in ``arguments`` plus ``lock_timeout_ms`` and
    ``attempts`` when they are not the defaults.

    Each operation spells ``lock_timeout_ms`` and ``attempts`` out in its own ``__init__`` rather
    than passing ``**kwargs`` through: ``MigrationWriter`` writes only the keyword arguments it
    finds in the signature, and would silently drop the others.
    """

    arguments: tuple[str, ...] = ()
    base_delay = 0.5

    def __init__(
        self,
        *args,
        lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
        attempts: int = DEFAULT_ATTEMPTS,
        **kwargs,
    ):
        if int(lock_timeout_ms) < 1 or int(attempts) < 1:
            raise ValueError(
                f"{self.__class__.__name__}: lock_timeout_ms and attempts must be >= 1"
            )
        super().__init__(*args, **kwargs)
        self.lock_timeout_ms = lock_timeout_ms
        self.attempts = attempts

    def deconstruct(self):
        kwargs = {name: getattr(self, name) for name in self.arguments}
        if self.lock_timeout_ms != DEFAULT_LOCK_TIMEOUT_MS:
            kwargs["lock_timeout_ms"] = self.lock_timeout_ms
        if self.attempts != DEFAULT_ATTEMPTS:
            kwargs["attempts"] = self.attempts
        return self.__class__.__name__, [], kwargs

    def _run(self, schema_editor, statements: Callable[[], None], what: str) -> None:
        """Run ``statements`` under the lock timeout, retrying lock timeouts with backoff."""

        def attempt() -> None:
            with lock_timeout(int(self.lock_timeout_ms), using=schema_editor.connection.alias):
                statements()

        def warn(exc, attempt_number):
            # An operator watching migrate should see that it is waiting behind someone.
            logger.warning(
                "%s: lock timeout, attempt %d of %d", what, attempt_number, self.attempts
            )

        try:
            call_with_retries(
                attempt,
                attempts=self.attempts,
                retryable={LOCK_NOT_AVAILABLE},
                base_delay=self.base_delay,
                max_delay=self.base_delay * 2**self.attempts,
                what=what,
                on_retry=warn,
            )
        except OperationalError as exc:
            if sqlstate(exc) != LOCK_NOT_AVAILABLE:
                raise
            raise MigrationBlocked(
                f"{what}: could not get its lock within {self.lock_timeout_ms} ms in "
                f"{self.attempts} attempts. A long transaction holds the table; find it "
                "with `manage.py db_doctor`, end it, and run migrate again."
            ) from exc

    def _execute(self, schema_editor, sql: str, params=None) -> None:
        schema_editor.execute(sql, params)

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


def index_state(connection, name: str) -> str | None:
    """'valid', 'invalid' or None (no such index) for an index name in the current schema."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT i.indisvalid
              FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relname = %s AND n.nspname = ANY(current_schemas(false))
            """,
            [name],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    return "valid" if row[0] else "invalid"


def constraint_exists(connection, table: str, name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_constraint WHERE conname = %s AND conrelid = %s::regclass",
            [name, table],
        )
        return cursor.fetchone() is not None


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
    """Django's AddIndexConcurrently, with a lock timeout, retries and INVALID-leftover cleanup."""

    arguments = ("model_name", "index")

    def __init__(
        self,
        model_name,
        index,
        *,
        lock_timeout_ms=DEFAULT_LOCK_TIMEOUT_MS,
        attempts=DEFAULT_ATTEMPTS,
    ):
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
    """Django's RemoveIndexConcurrently, with a lock timeout and retries; reversible."""

    arguments = ("model_name", "name")

    def __init__(
        self,
        model_name,
        name,
        *,
        lock_timeout_ms=DEFAULT_LOCK_TIMEOUT_MS,
        attempts=DEFAULT_ATTEMPTS,
    ):
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


class AddUniqueConstraintConcurrently(_ConcurrentIndexBuild, Operation):
    """A plain unique constraint on columns, its index built concurrently, then attached."""

    reversible = True
    arguments = ("model_name", "constraint")

    def __init__(
        self,
        model_name,
        constraint,
        *,
        lock_timeout_ms=DEFAULT_LOCK_TIMEOUT_MS,
        attempts=DEFAULT_ATTEMPTS,
    ):
        if (
            not isinstance(constraint, UniqueConstraint)
            or not constraint.fields
            or constraint.condition
            or constraint.expressions
        ):
            raise ValueError(
                "AddUniqueConstraintConcurrently takes a UniqueConstraint on plain fields"
            )
        super().__init__(lock_timeout_ms=lock_timeout_ms, attempts=attempts)
        self.model_name = model_name
        self.constraint = constraint

    def state_forwards(self, app_label, state):
        state.add_constraint(app_label, self.model_name.lower(), self.constraint)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = self._model(app_label, schema_editor, to_state)
        if model is None:
            return
        table = model._meta.db_table
        name = self.constraint.name
        if constraint_exists(schema_editor.connection, table, name):
            return
        q = schema_editor.quote_name
        columns = ", ".join(q(model._meta.get_field(f).column) for f in self.constraint.fields)
        self._build(
            schema_editor,
            name,
            lambda: self._execute(
                schema_editor,
                f"CREATE UNIQUE INDEX CONCURRENTLY {q(name)} ON {q(table)} ({columns})",
            ),
        )
        self._run(
            schema_editor,
            lambda: self._execute(
                schema_editor,
                f"ALTER TABLE {q(table)} ADD CONSTRAINT {q(name)} UNIQUE USING INDEX {q(name)}",
            ),
            f"attaching unique constraint {name}",
        )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        model = self._model(app_label, schema_editor, from_state)
        if model is None:
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
        lock_timeout_ms=DEFAULT_LOCK_TIMEOUT_MS,
        attempts=DEFAULT_ATTEMPTS,
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

    Django's ``ValidateConstraint`` (contrib.postgres) waits for its lock as long as it takes, in
    the migration's transaction; this one runs outside a transaction, under a lock timeout with
    retries, like the other operations here. Reversing it is a no-op: a validated constraint
    cannot be made NOT VALID again, and there is no need to.
    """

    reversible = True
    arguments = ("model_name", "name")

    def __init__(
        self,
        model_name,
        name,
        *,
        lock_timeout_ms=DEFAULT_LOCK_TIMEOUT_MS,
        attempts=DEFAULT_ATTEMPTS,
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


class SetNotNullPhased(SafeOperationMixin, Operation):
    """SET NOT NULL without a full-table scan under an ACCESS EXCLUSIVE lock.

    1. ADD CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID   (brief lock, no scan)
    2. VALIDATE CONSTRAINT                                     (scan, writes go on)
    3. ALTER COLUMN ... SET NOT NULL                           (brief lock: the valid check proves it)
    4. DROP CONSTRAINT                                         (the column constraint now says it)
    Each phase is skipped when already done, so a run that stopped half way can simply run again.
    """

    reversible = True
    arguments = ("model_name", "field_name")

    def __init__(
        self,
        model_name,
        field_name,
        *,
        lock_timeout_ms=DEFAULT_LOCK_TIMEOUT_MS,
        attempts=DEFAULT_ATTEMPTS,
    ):
        super().__init__(lock_timeout_ms=lock_timeout_ms, attempts=attempts)
        self.model_name = model_name
        self.field_name = field_name

    def state_forwards(self, app_label, state):
        self._field_state_change(app_label, state, null=False)

    def _names(self, model):
        column = model._meta.get_field(self.field_name).column
        check = f"{model._meta.db_table}_{column}_not_null"[:63]
        return model._meta.db_table, column, check

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = self._model(app_label, schema_editor, to_state)
        if model is None:
            return
        table, column, check = self._names(model)
        q = schema_editor.quote_name
        connection = schema_editor.connection

        def add_check():
            if not constraint_exists(connection, table, check):
                self._execute(
                    schema_editor,
                    f"ALTER TABLE {q(table)} ADD CONSTRAINT {q(check)} CHECK ({q(column)} IS NOT NULL) NOT VALID",
                )

        self._run(schema_editor, add_check, f"adding NOT VALID check {check}")
        self._run(
            schema_editor,
            lambda: self._execute(
                schema_editor, f"ALTER TABLE {q(table)} VALIDATE CONSTRAINT {q(check)}"
            ),
            f"validating {check}",
        )
        self._run(
            schema_editor,
            lambda: self._execute(
                schema_editor, f"ALTER TABLE {q(table)} ALTER COLUMN {q(column)} SET NOT NULL"
            ),
            f"setting {table}.{column} NOT NULL",
        )
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
        table, column, check = self._names(model)
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
