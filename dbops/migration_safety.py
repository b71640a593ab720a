"""Safe by default: a system check that refuses migrations which would block traffic on PostgreSQL.

``manage.py check`` and ``migrate`` (which runs the checks for its database before it applies
anything) walk every migration of the project's own apps in the migration graph, keeping the
project state as they go, and report each operation that would hold a lock blocking reads or
writes for longer than a moment on a table that already exists. Operations on a table created by
``CreateModel`` earlier in the same migration are fine: the table is new and empty.

Rules (the id is stable; the message names the migration, the operation and what to use):

- dbops.E101: ``AddIndex``, or a field gaining ``db_index`` (a ``ForeignKey`` has it by default).
  CREATE INDEX holds a SHARE lock: writes wait for the whole build. Use ``AddIndexConcurrently``.
- dbops.E102: ``AddConstraint`` (unique, check, exclusion), or a field gaining ``unique``: built
  or checked under ACCESS EXCLUSIVE. Use ``AddUniqueConstraintConcurrently``; for a check,
  ``AddConstraintNotValid`` then ``ValidateConstraintWithLockTimeout``.
- dbops.E103: a ``ForeignKey`` with ``db_constraint`` added to an existing table (``AddField``,
  or ``AlterField`` turning the constraint on): validated by a scan under SHARE ROW EXCLUSIVE on
  both tables. Use ``db_constraint=False``, ``AddForeignKeyNotValid``, then
  ``ValidateConstraintWithLockTimeout``.
- dbops.E104: ``AlterField`` changing the column type (the table and its indexes are rewritten
  under ACCESS EXCLUSIVE) or its collation (its indexes are rebuilt). Expand and contract with
  ``backfill_column`` instead. Not flagged, because PostgreSQL changes only the catalog
  (binary-coercible, or a wider type modifier; the tests show the table keeps its file):
  ``varchar(n)`` to ``varchar(m >= n)``, ``varchar`` or ``text``; ``text`` to ``varchar``;
  ``numeric(p, s)`` to ``numeric(q >= p, s)`` or ``numeric``.
- dbops.E105: ``AddField`` that rewrites the table: a volatile ``db_default`` (``random()``,
  ``gen_random_uuid()``, ``clock_timestamp()``...), a stored generated column, an identity
  column. A constant or stable default (``Now()`` is ``statement_timestamp()``, stable) is stored
  once in the catalog: no rewrite. Django's ``default=`` is evaluated once in Python and sent as
  a constant, so it never rewrites either.
- dbops.E106: ``AddField`` NOT NULL with neither ``default`` nor ``db_default``. It blocks
  nothing, but fails on any table with rows: it passes on the empty test database and breaks the
  deploy. Add it nullable, ``backfill_column``, then ``SetNotNullPhased``.
- dbops.E107: ``AlterField`` dropping ``null=True``: SET NOT NULL scans the table under ACCESS
  EXCLUSIVE. Use ``SetNotNullPhased``.
- dbops.E108: ``RunSQL`` with ``CREATE INDEX`` without ``CONCURRENTLY``.
- dbops.E109: ``RunSQL`` with ``ALTER TABLE`` and no ``lock_timeout`` set before it in the same
  SQL (``SET [LOCAL] lock_timeout`` or ``set_config('lock_timeout', ...)``): waiting for its lock,
  it queues every query on the table behind it.
Rules for a rolling deploy, where the old code keeps running while the migration applies
(strong_migrations and Sentry's migration framework guard the same):

- dbops.E110: ``RemoveField`` on an existing table (old code still selects the column). Use
  ``SafeRemoveField`` in two deploys: ``stage="pending"`` (state only), then ``stage="delete"``.
  Also a delete stage before, or in the same migration as, its pending stage.
- dbops.E111: ``DeleteModel`` of an existing table; ``SafeDeleteModel`` in two deploys likewise.
- dbops.E112: removing a foreign key field with its constraint (``RemoveField``, or the pending
  stage of ``SafeRemoveField``): drop the constraint first (``db_constraint=False``).
- dbops.E113: renaming a column (``RenameField``, ``AlterField`` changing ``db_column``): rename
  in Python only with ``db_column``.
- dbops.E114: renaming a table (``RenameModel``, ``AlterModelTable``): keep it with ``db_table``.
- dbops.E115: a NOT NULL column whose default is Python-only (``default=`` without
  ``db_default``): Django drops the database default right after adding the column, so the old
  code's INSERTs fail. Also a pending ``SafeRemoveField`` of a NOT NULL column without one.
- dbops.E116: a table, column, index or constraint name over 63 bytes (PostgreSQL truncates it).
- dbops.E117: a data change inside a migration: ``RunPython``, or ``RunSQL`` with ``UPDATE``,
  ``DELETE``, ``INSERT ... SELECT``, ``MERGE`` on an existing table. Use ``backfill_column``.

A baseline, ``DBOPS["MIGRATION_SAFETY_BASELINE"] = {"app": "0042_name"}``, leaves alone every
migration of that app up to and including the one named (``dbops.E003`` if it names none):
migrations that predate the check, or a new rule, are not judged again.

- dbops.E100: a malformed ``reviewed_unsafe`` entry (no reason, or a key that is not
  ``(operation index, "dbops.E1xx")``); dbops.W101: an entry that matches no finding.

A person who has looked at a finding and knows it is safe (a table that stays small, a window
with the traffic stopped) says so in the migration, per operation and per rule, with the reason::

    class Migration(migrations.Migration):
        reviewed_unsafe = {
            (2, "dbops.E101"): "countries: 250 rows, read-only; the build takes milliseconds",
        }

The key is the index of the operation in ``operations`` and the rule id; the reason is required.
Only the database side is checked (``database_operations`` of ``SeparateDatabaseAndState``; the
forward ``sql`` of ``RunSQL``); ``RunPython`` cannot be inspected.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache

from django.apps import apps
from django.conf import ENVIRONMENT_VARIABLE, settings
from django.contrib.postgres.operations import AddConstraintNotValid
from django.contrib.postgres.operations import AddIndexConcurrently as DjangoAddIndexConcurrently
from django.core import checks
from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import truncate_name
from django.db.migrations import operations
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState
from django.db.models.sql import Query

from dbops.conf import dbops_settings
from dbops.operations import (
    AddForeignKeyNotValid,
    AddUniqueConstraintConcurrently,
    SafeDeleteModel,
    SafeRemoveField,
)

INDEX = "dbops.E101"
CONSTRAINT = "dbops.E102"
FOREIGN_KEY = "dbops.E103"
TYPE_CHANGE = "dbops.E104"
TABLE_REWRITE = "dbops.E105"
NOT_NULL_WITHOUT_DEFAULT = "dbops.E106"
SET_NOT_NULL = "dbops.E107"
SQL_INDEX = "dbops.E108"
SQL_LOCK_TIMEOUT = "dbops.E109"
DROP_COLUMN = "dbops.E110"
DROP_TABLE = "dbops.E111"
DROP_FOREIGN_KEY = "dbops.E112"
RENAME_COLUMN = "dbops.E113"
RENAME_TABLE = "dbops.E114"
PYTHON_DEFAULT = "dbops.E115"
LONG_IDENTIFIER = "dbops.E116"
DATA_CHANGE = "dbops.E117"
RULES = (
    INDEX,
    CONSTRAINT,
    FOREIGN_KEY,
    TYPE_CHANGE,
    TABLE_REWRITE,
    NOT_NULL_WITHOUT_DEFAULT,
    SET_NOT_NULL,
    SQL_INDEX,
    SQL_LOCK_TIMEOUT,
    DROP_COLUMN,
    DROP_TABLE,
    DROP_FOREIGN_KEY,
    RENAME_COLUMN,
    RENAME_TABLE,
    PYTHON_DEFAULT,
    LONG_IDENTIFIER,
    DATA_CHANGE,
)
BAD_BASELINE = "dbops.E003"
BAD_REVIEW = "dbops.E100"
STALE_REVIEW = "dbops.W101"
REVIEW_ATTRIBUTE = "reviewed_unsafe"

OPS = "dbops.operations"
ATOMIC_FALSE = "in a migration with atomic = False"
EXPAND_CONTRACT = (
    "add a new nullable column, fill it with `manage.py backfill_column`, move reads and writes "
    "to it, then drop the old one"
)

# Volatile in PostgreSQL (pg_proc.provolatile = 'v'): a column default calling one is computed
# per row, so ADD COLUMN rewrites the table. Stable and immutable defaults are computed once.
VOLATILE_FUNCTIONS = frozenset(
    {
        "clock_timestamp",
        "gen_random_uuid",
        "nextval",
        "random",
        "random_normal",
        "timeofday",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "uuidv4",
        "uuidv7",
    }
)
AUTO_FIELDS = frozenset({"AutoField", "BigAutoField", "SmallAutoField"})

_FUNCTION_CALL = re.compile(r"\b([a-z_][a-z0-9_]*)\s*\(", re.IGNORECASE)
_VARCHAR = re.compile(r"^(?:varchar|charactervarying)(?:\((\d+)\))?$")
_NUMERIC = re.compile(r"^numeric(?:\((\d+),(\d+)\))?$")
_SQL_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_NAME = r"(?P<table>[^\s(;]+)"
_CREATE_TABLE = re.compile(
    r"\bCREATE\s+(?:(?:GLOBAL|LOCAL)\s+)?(?:(?:TEMP|TEMPORARY|UNLOGGED)\s+)?TABLE\s+"
    r"(?:IF\s+NOT\s+EXISTS\s+)?" + _NAME,
    re.IGNORECASE,
)
_CREATE_INDEX = re.compile(
    r"\bCREATE\s+(?:UNIQUE\s+)?INDEX\s+(?!CONCURRENTLY\b)(?:IF\s+NOT\s+EXISTS\s+)?(?:\S+\s+)?"
    r"ON\s+(?:ONLY\s+)?" + _NAME,
    re.IGNORECASE,
)
_ALTER_TABLE = re.compile(
    r"\bALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?" + _NAME, re.IGNORECASE
)
_SETS_LOCK_TIMEOUT = re.compile(
    r"\bSET\s+(?:LOCAL\s+|SESSION\s+)?lock_timeout\b|\bset_config\s*\(\s*'lock_timeout'",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Issue:
    """What one rule found in one operation, and what to use instead."""

    id: str
    problem: str
    fix: str


@dataclass(frozen=True)
class Finding:
    index: int
    operation: Operation
    issue: Issue

    def error(self, migration) -> checks.Error:
        op = self.operation
        return checks.Error(
            f"{migration.app_label}.{migration.name}, operation {self.index} "
            f"({type(op).__name__}: {op.describe()}): {self.issue.problem}. "
            f"Instead: {self.issue.fix}.",
            hint=(
                "If it is safe here (say why), mark it reviewed in the migration: "
                f'{REVIEW_ATTRIBUTE} = {{({self.index}, "{self.issue.id}"): "<why it is safe>"}}'
            ),
            id=self.issue.id,
        )


@dataclass
class Context:
    """The project state before the operation, and the tables this migration has created."""

    app_label: str
    state: ProjectState
    connection: BaseDatabaseWrapper
    new_models: set[str] = field(default_factory=set)
    new_tables: set[str] = field(default_factory=set)
    # (model, field) or (model, None) whose pending stage (SafeRemoveField/SafeDeleteModel) is
    # in this migration: their delete stage must wait for a later deploy.
    pending: set[tuple[str, str | None]] = field(default_factory=set)

    def existing_table(self, model_name: str) -> bool:
        """True for a table that existed before this migration, with rows and traffic."""
        model = self.state.models.get((self.app_label, model_name.lower()))
        if model is None or model_name.lower() in self.new_models:
            return False
        return model.options.get("managed", True) and not model.options.get("proxy", False)

    def note_created(self, operation: Operation) -> None:
        if isinstance(operation, operations.CreateModel):
            self.new_models.add(operation.name_lower)
            default = f"{self.app_label}_{operation.name_lower}"
            table = operation.options.get("db_table") or truncate_name(
                default, self.connection.ops.max_name_length()
            )
            self.new_tables.add(_table_key(table))
        elif isinstance(operation, operations.RunSQL):
            sql = _forward_sql(operation)
            self.new_tables.update(_table_key(m["table"]) for m in _CREATE_TABLE.finditer(sql))


# Rules on model operations ---------------------------------------------------------------------


def _add_index_issues(operation, ctx: Context) -> Iterator[Issue]:
    yield Issue(
        INDEX,
        f"builds index {operation.index.name} under a SHARE lock: writes to the table wait for "
        "the whole build",
        f"{OPS}.AddIndexConcurrently {ATOMIC_FALSE}",
    )


def _add_constraint_issues(operation, ctx: Context) -> Iterator[Issue]:
    constraint = operation.constraint
    name = constraint.name
    if isinstance(constraint, models.UniqueConstraint):
        plain = constraint.fields and not (
            constraint.condition or constraint.expressions or constraint.include
        )
        if plain:  # ALTER TABLE ... ADD CONSTRAINT ... UNIQUE
            fix = f"{OPS}.AddUniqueConstraintConcurrently {ATOMIC_FALSE}"
            problem = f"builds the index of {name} under ACCESS EXCLUSIVE (no reads, no writes)"
        else:  # CREATE UNIQUE INDEX
            fix = f"{OPS}.AddUniqueConstraintConcurrently {ATOMIC_FALSE} (it keeps every option)"
            problem = f"builds {name} under a SHARE lock: writes wait for the whole build"
    elif isinstance(constraint, models.CheckConstraint):
        fix = (
            "django.contrib.postgres.operations.AddConstraintNotValid, then "
            f"{OPS}.ValidateConstraintWithLockTimeout in a later migration {ATOMIC_FALSE}"
        )
        problem = (
            f"checks every row for {name} under an ACCESS EXCLUSIVE lock (no reads, no writes)"
        )
    else:
        fix = "there is no form that does not block: run it while the table is small, and review it"
        problem = f"builds and checks {name} under an ACCESS EXCLUSIVE lock (no reads, no writes)"
    yield Issue(CONSTRAINT, problem, fix)


def _field_issues(name: str, old, new) -> Iterator[Issue]:
    """Index, unique and foreign key that ``new`` has and ``old`` (None: a new column) had not."""
    if new.unique and not new.primary_key and not (old and old.unique):
        yield Issue(
            CONSTRAINT,
            f"makes {name} unique: its index is built under ACCESS EXCLUSIVE (no reads, no writes)",
            f"the field without unique=True, then {OPS}.AddUniqueConstraintConcurrently "
            + ATOMIC_FALSE,
        )
    elif new.db_index and not (old and (old.db_index or old.unique)):
        yield Issue(
            INDEX,
            f"indexes {name} under a SHARE lock: writes wait for the whole build",
            f"db_index=False on the field, then {OPS}.AddIndexConcurrently {ATOMIC_FALSE}",
        )
    if _has_foreign_key(new) and not (old and _has_foreign_key(old)):
        yield Issue(
            FOREIGN_KEY,
            f"adds the foreign key of {name}, validated by a scan under SHARE ROW EXCLUSIVE locks "
            "on both tables: writes to both wait",
            f"db_constraint=False on the field, then {OPS}.AddForeignKeyNotValid and, in a later "
            f"migration, {OPS}.ValidateConstraintWithLockTimeout (both {ATOMIC_FALSE})",
        )


def _has_foreign_key(field_) -> bool:
    return isinstance(field_, models.ForeignKey) and field_.db_constraint


def _add_field_issues(operation, ctx: Context) -> Iterator[Issue]:
    new = operation.field
    if new.many_to_many:
        return  # a new join table: nothing existing is locked
    yield from _field_issues(operation.name, None, new)
    rewrite = _rewrite_reason(new, ctx.connection)
    if rewrite:
        yield Issue(
            TABLE_REWRITE,
            f"adds {operation.name} with {rewrite}: PostgreSQL rewrites the whole table under "
            "ACCESS EXCLUSIVE (no reads, no writes)",
            "add a plain nullable column; give new rows their value in a later step (an "
            "AlterField setting db_default changes only the catalog); fill the old rows with "
            "`manage.py backfill_column`",
        )
    elif not new.null and not new.has_default() and not new.has_db_default():
        yield Issue(
            NOT_NULL_WITHOUT_DEFAULT,
            f"adds {operation.name} NOT NULL with no default: it fails on a table that has rows",
            f"add it null=True, fill it with `manage.py backfill_column`, then "
            f"{OPS}.SetNotNullPhased; or give it a db_default",
        )
    elif not new.null and not new.has_db_default():
        yield _python_default_issue(
            operation.name,
            "is NOT NULL with a default in Python only: Django drops the column's default right "
            "after adding it, so the INSERTs of the old code still running, which do not know "
            "the column, fail",
            f"db_default={new.default!r} (kept by the database; default= too if you like)",
        )


def _rewrite_reason(new, connection) -> str | None:
    if isinstance(new, models.GeneratedField):
        return "a stored generated value"
    if new.get_internal_type() in AUTO_FIELDS:
        return "an identity value for every row"
    sql = _db_default_sql(new, connection)
    called = {name.lower() for name in _FUNCTION_CALL.findall(sql or "")}
    if called & VOLATILE_FUNCTIONS:
        return f"the volatile db_default {sql}"
    return None


def _db_default_sql(new, connection) -> str | None:
    """The SQL of an expression ``db_default``; None for none or a constant."""
    if not new.has_db_default() or not hasattr(new.db_default, "resolve_expression"):
        return None
    if isinstance(new.db_default, models.Value):
        return None
    compiler = Query(None).get_compiler(connection=connection)
    sql, _params = compiler.compile(new.db_default)
    return sql


def _alter_field_issues(operation, ctx: Context) -> Iterator[Issue]:
    model = ctx.state.models[ctx.app_label, operation.model_name_lower]
    old, new = model.fields.get(operation.name), operation.field
    if old is None:
        return
    yield from _field_issues(operation.name, old, new)
    change = _type_change(operation.name, old, new, ctx.connection)
    if change:
        yield Issue(TYPE_CHANGE, change, EXPAND_CONTRACT)
    if old.null and not new.null:
        yield Issue(
            SET_NOT_NULL,
            f"sets {operation.name} NOT NULL, which scans the table under ACCESS EXCLUSIVE",
            f"{OPS}.SetNotNullPhased {ATOMIC_FALSE} (after `manage.py backfill_column`)",
        )


def _type_change(name: str, old, new, connection) -> str | None:
    """What changing the column's type or collation costs; None when only the catalog changes."""
    if old.is_relation or new.is_relation:
        return None  # follows its target's primary key, whose own AlterField is checked
    old_type, new_type = old.db_type(connection), new.db_type(connection)
    if old_type is None or new_type is None:
        return None
    old_collation = getattr(old, "db_collation", None) or "default"
    new_collation = getattr(new, "db_collation", None) or "default"
    if not catalog_only_type_change(old_type, new_type):
        return (
            f"changes {name} from {old_type} to {new_type}: PostgreSQL rewrites the table and "
            "its indexes under ACCESS EXCLUSIVE (no reads, no writes)"
        )
    if old_collation != new_collation:
        return (
            f"changes the collation of {name} from {old_collation} to {new_collation}: its "
            "indexes are rebuilt under ACCESS EXCLUSIVE (no reads, no writes)"
        )
    return None


def catalog_only_type_change(old_type: str, new_type: str) -> bool:
    """True when PostgreSQL changes only the catalog: same type, or a widening it need not check."""
    old, new = (re.sub(r"\s+", "", t.lower()) for t in (old_type, new_type))
    if old == new or (old == "text" and new in ("varchar", "charactervarying")):
        return True
    if old_varchar := _VARCHAR.match(old):
        new_varchar = _VARCHAR.match(new)
        if new == "text" or (new_varchar and new_varchar[1] is None):
            return True
        return bool(old_varchar[1] and new_varchar and int(new_varchar[1]) >= int(old_varchar[1]))
    old_numeric, new_numeric = _NUMERIC.match(old), _NUMERIC.match(new)
    if old_numeric and new_numeric and old_numeric[1]:
        if new_numeric[1] is None:
            return True
        return int(new_numeric[1]) >= int(old_numeric[1]) and new_numeric[2] == old_numeric[2]
    return False


# Rules on raw SQL ------------------------------------------------------------------------------


def _forward_sql(operation: operations.RunSQL) -> str:
    """The forward SQL of a RunSQL as one text without comments."""
    sql = operation.sql
    parts = [sql] if isinstance(sql, str) else [s if isinstance(s, str) else s[0] for s in sql]
    return _SQL_COMMENT.sub(" ", ";\n".join(parts))


def _table_key(name: str) -> str:
    return name.split(".")[-1].strip('"').lower()


def _statement(sql: str, start: int) -> str:
    return " ".join(sql[start:].split(";")[0].split())[:80]


def _run_sql_issues(operation: operations.RunSQL, ctx: Context) -> Iterator[Issue]:
    sql = _forward_sql(operation)
    new_tables = ctx.new_tables | {_table_key(m["table"]) for m in _CREATE_TABLE.finditer(sql)}
    for match in _CREATE_INDEX.finditer(sql):
        if _table_key(match["table"]) not in new_tables:
            yield Issue(
                SQL_INDEX,
                f"runs `{_statement(sql, match.start())}` without CONCURRENTLY: writes to "
                f"{match['table']} wait for the whole build",
                f"CREATE INDEX CONCURRENTLY {ATOMIC_FALSE}, or {OPS}.AddIndexConcurrently",
            )
            break
    for match in _ALTER_TABLE.finditer(sql):
        if _table_key(match["table"]) in new_tables:
            continue
        if not _SETS_LOCK_TIMEOUT.search(sql, 0, match.start()):
            yield Issue(
                SQL_LOCK_TIMEOUT,
                f"runs `{_statement(sql, match.start())}` with no lock_timeout set before it: "
                f"while it waits for its lock, every query on {match['table']} queues behind it",
                "begin the SQL with SET LOCAL lock_timeout = '3s' (SET lock_timeout when the "
                f"migration has atomic = False), or use the {OPS} operations, which set it",
            )
        break


# Rules for a rolling deploy: old code keeps running while the migration applies ----------------

TWO_DEPLOYS = (
    "in a later deploy, once no process runs the code of this one"  # what "delete" waits for
)
MAX_IDENTIFIER_BYTES = 63


def _column(name: str, field_) -> str:
    """The column of a migration-state field (unbound: no ``column`` attribute yet)."""
    if field_.db_column:
        return field_.db_column
    return f"{name}_id" if isinstance(field_, models.ForeignKey) else name


def _table(ctx: Context, model_name: str) -> str:
    model = ctx.state.models.get((ctx.app_label, model_name.lower()))
    table = model.options.get("db_table") if model else None
    return table or truncate_name(
        f"{ctx.app_label}_{model_name.lower()}", ctx.connection.ops.max_name_length()
    )


def _remove_field_issues(operation, ctx: Context) -> Iterator[Issue]:
    model = ctx.state.models[ctx.app_label, operation.model_name_lower]
    old = model.fields.get(operation.name)
    if old is None:
        return
    if _has_foreign_key(old):
        yield _foreign_key_drop_issue(operation.name)
    yield Issue(
        DROP_COLUMN,
        f"drops {operation.name} in the deploy that stops using it: the old code still running "
        "names every column of the model in its queries, and fails until it is replaced",
        f"{OPS}.SafeRemoveField(..., stage='pending') here (the state forgets the field, the "
        f"column stays), then SafeRemoveField(..., stage='delete') {TWO_DEPLOYS}",
    )


def _foreign_key_drop_issue(name: str) -> Issue:
    return Issue(
        DROP_FOREIGN_KEY,
        f"drops foreign key {name} with its constraint, which locks the referenced table as well "
        "(and, while pending, keeps checking and locking it)",
        "first AlterField with db_constraint=False in a migration of its own (a brief lock on "
        f"both tables, under the lock timeout), then {OPS}.SafeRemoveField",
    )


def _safe_remove_field_issues(operation, ctx: Context) -> Iterator[Issue]:
    model = ctx.state.models.get((ctx.app_label, operation.model_name.lower()))
    if model is None:
        return
    key = (operation.model_name.lower(), operation.name.lower())
    old = model.fields.get(operation.name)
    if operation.stage == "pending" and old is not None:
        ctx.pending.add(key)
        if _has_foreign_key(old):
            yield _foreign_key_drop_issue(operation.name)
        if not old.null and not old.has_db_default():
            yield _python_default_issue(
                operation.name,
                "stays NOT NULL with no database default once the code stops writing it: "
                "every INSERT of the new code fails",
                "first AlterField to null=True (only the catalog changes) or give it db_default",
            )
    elif operation.stage == "delete" and (old is not None or key in ctx.pending):
        when = (
            "before its pending stage"
            if old is not None
            else "in the migration of its pending stage"
        )
        yield Issue(
            DROP_COLUMN,
            f"drops {operation.name} {when}: code that still uses it is running",
            f"SafeRemoveField(..., stage='pending') in one deploy, the delete stage {TWO_DEPLOYS}",
        )


def _delete_model_issues(operation, ctx: Context) -> Iterator[Issue]:
    name = operation.name.lower()
    if isinstance(operation, operations.DeleteModel):
        if ctx.existing_table(name):
            yield _drop_table_issue(name, "in the deploy that stops using it")
        return
    if operation.stage == "pending":
        ctx.pending.add((name, None))
    elif (ctx.app_label, name) in ctx.state.models or (name, None) in ctx.pending:
        yield _drop_table_issue(name, "before a deploy has stopped using it")


def _drop_table_issue(name: str, when: str) -> Issue:
    return Issue(
        DROP_TABLE,
        f"drops the table of {name} {when}: the old code still running queries it and fails",
        f"{OPS}.SafeDeleteModel(..., stage='pending') here, then "
        f"SafeDeleteModel(..., stage='delete') {TWO_DEPLOYS}",
    )


def _rename_issues(operation, ctx: Context) -> Iterator[Issue]:
    if isinstance(operation, operations.RenameField | operations.AlterField):
        if not ctx.existing_table(operation.model_name):
            return
        model = ctx.state.models[ctx.app_label, operation.model_name_lower]
        old_name = getattr(operation, "old_name", operation.name)
        new_name = getattr(operation, "new_name", operation.name)
        old = model.fields.get(old_name)
        new = old if isinstance(operation, operations.RenameField) else operation.field
        if old is None or _column(old_name, old) == _column(new_name, new):
            return
        yield Issue(
            RENAME_COLUMN,
            f"renames column {_column(old_name, old)} to {_column(new_name, new)}: the old code "
            "still running asks for the old name, the new code for the new one",
            f"rename in Python only: keep the column, db_column={_column(old_name, old)!r}",
        )
        return
    old_name = getattr(operation, "old_name", operation.name)
    if not ctx.existing_table(old_name):
        return
    old_table = _table(ctx, old_name)
    if isinstance(operation, operations.RenameModel):
        model = ctx.state.models[ctx.app_label, old_name.lower()]
        new_table = model.options.get("db_table") or _table(ctx, operation.new_name)
    else:
        new_table = operation.table or truncate_name(
            f"{ctx.app_label}_{operation.name_lower}", ctx.connection.ops.max_name_length()
        )
    if old_table != new_table:
        yield Issue(
            RENAME_TABLE,
            f"renames table {old_table} to {new_table}: the old code still running queries the "
            "old name, the new code the new one",
            f"rename in Python only: keep the table, db_table={old_table!r} in the model's Meta",
        )


def _python_default_issue(name: str, problem: str, fix: str) -> Issue:
    return Issue(PYTHON_DEFAULT, f"{name} {problem}", fix)


def _identifiers(operation) -> Iterator[tuple[str, str]]:
    """(what, name) of every name the operation gives to a table, column, index or constraint."""
    if isinstance(operation, operations.CreateModel):
        if operation.options.get("db_table"):
            yield "table", operation.options["db_table"]
        for name, field_ in operation.fields:
            yield "column", _column(name, field_)
        for index in operation.options.get("indexes", []):
            yield "index", index.name
        for constraint in operation.options.get("constraints", []):
            yield "constraint", constraint.name
    elif isinstance(operation, operations.AddField | operations.AlterField):
        yield "column", _column(operation.name, operation.field)
    elif isinstance(operation, operations.RenameField):
        yield "column", operation.new_name
    elif isinstance(operation, operations.AddIndex):
        yield "index", operation.index.name
    elif isinstance(operation, operations.RenameIndex):
        yield "index", operation.new_name
    elif isinstance(operation, operations.AddConstraint | AddUniqueConstraintConcurrently):
        yield "constraint", operation.constraint.name
    elif isinstance(operation, AddForeignKeyNotValid):
        yield "constraint", operation.name
    elif isinstance(operation, operations.AlterModelTable) and operation.table:
        yield "table", operation.table


def _identifier_issues(operation) -> Iterator[Issue]:
    for what, name in _identifiers(operation):
        size = len(str(name).encode())
        if size > MAX_IDENTIFIER_BYTES:
            yield Issue(
                LONG_IDENTIFIER,
                f"names a {what} {name!r} of {size} bytes: PostgreSQL keeps the first 63 and "
                "drops the rest without a word, so two names alike up to there are one, and "
                "a later operation looks for a name the database does not have",
                f"a {what} name of at most 63 bytes",
            )


_DATA_SQL = re.compile(
    r"\bUPDATE\s+(?:ONLY\s+)?(?!SET\b)(?P<update>[^\s(;]+)(?:\s+(?:AS\s+)?(?!SET\b)\w+)?\s+SET\b"
    r"|\bDELETE\s+FROM\s+(?:ONLY\s+)?(?P<delete>[^\s(;]+)"
    r"|\bINSERT\s+INTO\s+(?P<insert>[^\s(;]+)\s*(?:\([^)]*\)\s*)?(?:SELECT|WITH)\b"
    r"|\bMERGE\s+INTO\s+(?:ONLY\s+)?(?P<merge>[^\s(;]+)",
    re.IGNORECASE,
)
BACKFILL_FIX = (
    "after the deploy, `manage.py backfill_column` (keyset batches, one short transaction each, "
    f"resumable), and {OPS}.RequireNoNulls in the migration that needs it done; a few rows of "
    "reference data: review it"
)


_DOLLAR_QUOTED = re.compile(r"\$\$.*?\$\$|\$(?P<tag>[A-Za-z_]\w*)\$.*?\$(?P=tag)\$", re.S)


def _data_change_issues(operation, ctx: Context) -> Iterator[Issue]:
    if isinstance(operation, operations.RunPython):
        if operation.code is not operations.RunPython.noop:
            yield Issue(
                DATA_CHANGE,
                "changes data inside the migration: on a big table that is one long transaction "
                "in the middle of the deploy, every row it touches locked until it commits",
                BACKFILL_FIX,
            )
        return
    # A function's body (dollar-quoted) runs when the function is called, not in the migration.
    sql = _DOLLAR_QUOTED.sub("''", _forward_sql(operation))
    new_tables = ctx.new_tables | {_table_key(m["table"]) for m in _CREATE_TABLE.finditer(sql)}
    for match in _DATA_SQL.finditer(sql):
        table = next(t for t in match.groups() if t)
        if _table_key(table) not in new_tables:
            yield Issue(
                DATA_CHANGE,
                f"runs `{_statement(sql, match.start())}` inside the migration: on a big table "
                "one long statement, every row it touches locked until the migration commits",
                BACKFILL_FIX,
            )
            return


# The walk --------------------------------------------------------------------------------------

MODEL_RULES = (
    (operations.AddIndex, _add_index_issues),
    (operations.AddConstraint, _add_constraint_issues),
    (operations.AddField, _add_field_issues),
    (operations.AlterField, _alter_field_issues),
    (operations.RemoveField, _remove_field_issues),
)
# Subclasses of the operations above that are the safe forms. An operation class may also say
# so itself with ``blocks_traffic = False`` (dbops.partitioning.operations do).
SAFE_FORMS = (DjangoAddIndexConcurrently, AddConstraintNotValid)
# Rules that tell a new table from an existing one themselves.
OTHER_RULES = (
    (operations.DeleteModel | SafeDeleteModel, _delete_model_issues),
    (SafeRemoveField, _safe_remove_field_issues),
    (
        operations.RenameField
        | operations.AlterField
        | operations.RenameModel
        | operations.AlterModelTable,
        _rename_issues,
    ),
    (operations.RunPython, _data_change_issues),
)


def _issues(operation: Operation, ctx: Context) -> Iterator[tuple[Operation, Issue]]:
    if isinstance(operation, operations.SeparateDatabaseAndState):
        for inner in operation.database_operations:
            yield from _issues(inner, ctx)
        return
    for issue in _identifier_issues(operation):
        yield operation, issue
    if isinstance(operation, operations.RunSQL):
        for issue in (*_run_sql_issues(operation, ctx), *_data_change_issues(operation, ctx)):
            yield operation, issue
        return
    for kind, rule in OTHER_RULES:
        if isinstance(operation, kind):
            for issue in rule(operation, ctx):
                yield operation, issue
    if isinstance(operation, SAFE_FORMS) or getattr(operation, "blocks_traffic", None) is False:
        return
    for kind, rule in MODEL_RULES:
        if isinstance(operation, kind) and ctx.existing_table(operation.model_name):
            for issue in rule(operation, ctx):
                yield operation, issue


def migration_findings(migration, state: ProjectState, connection) -> list[Finding]:
    """What in ``migration`` would block traffic; moves ``state`` past the migration."""
    ctx = Context(migration.app_label, state, connection)
    findings = []
    for index, operation in enumerate(migration.operations):
        findings += [Finding(index, op, issue) for op, issue in _issues(operation, ctx)]
        ctx.note_created(operation)
        operation.state_forwards(migration.app_label, state)
    return findings


def _reviews(migration) -> tuple[dict[tuple[int, str], str], list[checks.CheckMessage]]:
    """The well-formed ``reviewed_unsafe`` entries, and an error for each malformed one."""
    label = f"{migration.app_label}.{migration.name}"
    entries = getattr(migration, REVIEW_ATTRIBUTE, None) or {}
    if not isinstance(entries, dict):
        return {}, [_bad_review(f"{label}: {REVIEW_ATTRIBUTE} is a {type(entries).__name__}")]
    reviews, errors = {}, []
    for key, reason in entries.items():
        key_ok = isinstance(key, tuple) and len(key) == 2 and type(key[0]) is int
        if key_ok and key[1] in RULES and isinstance(reason, str) and reason.strip():
            reviews[key] = reason
        else:
            errors.append(_bad_review(f"{label}: {REVIEW_ATTRIBUTE} entry {key!r}: {reason!r}"))
    return reviews, errors


def _bad_review(what: str) -> checks.Error:
    return checks.Error(
        f'{what} is not of the form {{(operation index, "dbops.E1xx"): "why it is safe"}}.',
        hint=f"The key names one finding ({', '.join(RULES)}); the reason is required.",
        id=BAD_REVIEW,
    )


def reviewed_findings(
    migration, state: ProjectState, connection
) -> tuple[list[Finding], list[checks.CheckMessage]]:
    """The findings no review silences, and messages about reviews that are wrong or stale."""
    reviews, messages = _reviews(migration)
    findings, used = [], set()
    for finding in migration_findings(migration, state, connection):
        key = (finding.index, finding.issue.id)
        if key in reviews:
            used.add(key)
        else:
            findings.append(finding)
    for key in reviews.keys() - used:
        messages.append(
            checks.Warning(
                f"{migration.app_label}.{migration.name}: {REVIEW_ATTRIBUTE} entry {key!r} "
                "matches no finding; remove it, or fix its operation index.",
                id=STALE_REVIEW,
            )
        )
    return findings, messages


def migration_messages(migration, state: ProjectState, connection) -> list[checks.CheckMessage]:
    """Check messages for one migration: unreviewed findings, bad and stale reviews."""
    findings, messages = reviewed_findings(migration, state, connection)
    return [finding.error(migration) for finding in findings] + messages


@cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _project_package() -> str:
    """The top-level package of the settings (override_settings hides SETTINGS_MODULE)."""
    module = (
        getattr(settings, "SETTINGS_MODULE", None)
        or os.environ.get(ENVIRONMENT_VARIABLE)
        or getattr(settings, "ROOT_URLCONF", None)
        or ""
    )
    return module.partition(".")[0]


def own_app_labels(app_configs: Iterable | None = None) -> set[str]:
    """Apps of this project: shipped with the settings package, or by no installed distribution.

    Django's contrib apps and third-party apps come from other distributions: their migrations
    are theirs to answer for.
    """
    distributions = _distributions()
    project = set(distributions.get(_project_package(), ()))
    labels = set()
    for app_config in app_configs if app_configs is not None else apps.get_app_configs():
        shipped_by = set(distributions.get(app_config.name.partition(".")[0], ()))
        if not shipped_by or shipped_by & project:
            labels.add(app_config.label)
    return labels


def _graph_plan(graph) -> list[tuple[str, str]]:
    """Every migration node in an order that applies each after its dependencies."""
    plan = {}
    for leaf in sorted(graph.leaf_nodes()):
        plan.update(dict.fromkeys(graph.forwards_plan(leaf)))
    return list(plan)


def baselined(graph) -> tuple[set[tuple[str, str]], list[checks.CheckMessage]]:
    """The migrations the baseline leaves alone: for each app in
    ``DBOPS["MIGRATION_SAFETY_BASELINE"]``, the named migration and every one of that app it
    depends on; and an error for each name that is not in the graph."""
    covered: set[tuple[str, str]] = set()
    messages = []
    for app_label, name in dbops_settings.MIGRATION_SAFETY_BASELINE.items():
        key = (app_label, name)
        if key not in graph.nodes:
            messages.append(
                checks.Error(
                    f"DBOPS['MIGRATION_SAFETY_BASELINE'] names {app_label}.{name}, which is not a "
                    "migration of this project.",
                    hint="Name the app's last migration written before the check was adopted "
                    '(e.g. {"shop": "0042_last_before_adoption"}).',
                    id=BAD_BASELINE,
                )
            )
            continue
        covered.update(node for node in graph.forwards_plan(key) if node[0] == app_label)
    return covered, messages


def check_migration_safety(app_configs=None, databases=None, **kwargs):
    """The system check (tag "migrations"): findings in the project's own migrations, but those
    the baseline leaves alone."""
    postgres = [a for a in databases or [DEFAULT_DB_ALIAS] if connections[a].vendor == "postgresql"]
    if not postgres:
        return []
    connection = connections[postgres[0]]
    labels = own_app_labels(app_configs)
    loader = MigrationLoader(None, ignore_no_migrations=True)
    state = ProjectState(real_apps=loader.unmigrated_apps)
    skipped, messages = baselined(loader.graph)
    for key in _graph_plan(loader.graph):
        migration = loader.graph.nodes[key]
        if key[0] in labels and key not in skipped:
            messages += migration_messages(migration, state, connection)
        else:
            migration.mutate_state(state, preserve=False)
    return messages
