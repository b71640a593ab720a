"""From ``BackfillOptions`` to the one SQL statement each batch runs, checked before any write."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import DatabaseError, connections, transaction
from django.db.models import Field, Model

from dbops.backfill.options import BackfillOptions, Expression, FromField, Value
from dbops.errors import error_text

MIN_BATCH, MAX_BATCH = 1, 100_000
START_KEY = -(2**63)
INTEGER_KEYS = {"AutoField", "BigAutoField", "SmallAutoField", "IntegerField", "BigIntegerField"}


class BackfillError(Exception):
    """The backfill cannot start or cannot go on; the message says why and what to do."""


@dataclass
class BackfillPlan:
    options: BackfillOptions
    target: str  # app_label.Model.field
    table: str
    pk_column: str
    column: str
    set_sql: str
    where: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def database(self) -> str:
        return self.options.database

    @property
    def batch_size(self) -> int:
        return min(max(self.options.batch_size, MIN_BATCH), MAX_BATCH)

    @property
    def source(self) -> dict[str, str]:
        source = self.options.source
        if isinstance(source, Value):
            return {"value": source.text}
        if isinstance(source, FromField):
            return {"from_field": source.field_name}
        return {"expression": source.sql}

    @property
    def recorded_options(self) -> dict[str, str]:
        """What the run writes and to which rows: a resumed run must have the same."""
        return {**self.source, "where": self.where}

    def update_sql(self) -> str:
        q = connections[self.database].ops.quote_name
        table, pk, column = q(self.table), q(self.pk_column), q(self.column)
        # Identifiers quoted; set_sql and where are the operator's own SQL (what the command is for),
        # run through a one-statement cursor; values travel as parameters.
        # The batch's keys go to the UPDATE as an array (`= ANY(ARRAY(...))`), which the planner
        # turns into primary-key lookups whatever it estimates. A range bound read from a CTE
        # (`pk <= bounds.upper`) is unknown at plan time: once `where` matched most of a large
        # table, PostgreSQL chose a sequential scan of the whole table for every batch (seen on
        # 2,000,000 rows: 0.6 s per batch, then batches of one row).
        return f"""
WITH next_keys AS MATERIALIZED (
    SELECT {pk} FROM {table} WHERE {pk} > %(after)s ORDER BY {pk} LIMIT %(limit)s
), filled AS (
    UPDATE {table} SET {column} = {self.set_sql}
     WHERE {table}.{pk} = ANY(ARRAY(SELECT {pk} FROM next_keys)) AND ({_escape(self.where)})
    RETURNING 1
)
SELECT (SELECT max({pk}) FROM next_keys), (SELECT count(*) FROM filled)""".strip()  # noqa: S608


def _escape(fragment: str) -> str:
    """User SQL goes next to %(name)s placeholders: a literal % must be doubled."""
    return fragment.replace("%", "%%")


def _target(options: BackfillOptions) -> tuple[type[Model], Field]:
    """The model and the field to fill, or BackfillError saying what is wrong with them."""
    label = options.model_label
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError) as exc:
        raise BackfillError(
            f"Unknown model {label!r}: give it as app_label.Model, e.g. shop.Customer."
        ) from exc
    try:
        target = model._meta.get_field(options.field_name)
    except FieldDoesNotExist as exc:
        raise BackfillError(f"{label} has no field {options.field_name!r}.") from exc
    if not getattr(target, "concrete", False) or target.many_to_many or not target.column:
        raise BackfillError(f"{label}.{options.field_name} is not a column that can be filled.")
    if target.primary_key:
        raise BackfillError(
            f"{label}.{options.field_name} is the primary key: batches are keyed on it, it cannot be filled."
        )
    if model._meta.pk.get_internal_type() not in INTEGER_KEYS:
        raise BackfillError(
            f"{label} has a non-integer primary key: keyset batches here need an integer key."
        )
    return model, target


def _source_sql(options: BackfillOptions, model, target) -> tuple[str, dict[str, Any]]:
    """The SQL of the new value, and its parameters."""
    connection = connections[options.database]
    source, label = options.source, options.model_label
    if isinstance(source, Value):
        try:
            python_value = target.to_python(source.text)
            target.run_validators(python_value)
        except ValidationError as exc:
            raise BackfillError(
                f"The value {source.text!r} does not fit {label}.{target.name}: {' '.join(exc.messages)}"
            ) from exc
        return "%(value)s", {"value": target.get_db_prep_save(python_value, connection)}
    if isinstance(source, FromField):
        try:
            other = model._meta.get_field(source.field_name)
        except FieldDoesNotExist as exc:
            raise BackfillError(
                f"{label} has no field {source.field_name!r} to copy from."
            ) from exc
        if not getattr(other, "column", None):
            raise BackfillError(f"{label}.{source.field_name} is not a column to copy from.")
        return connection.ops.quote_name(other.column), {}
    assert isinstance(source, Expression)
    if not source.sql.strip():
        raise BackfillError("The expression is empty.")
    return f"({_escape(source.sql)})", {}


def plan_build(options: BackfillOptions) -> BackfillPlan:
    """Check the request against the models and build the plan; raises BackfillError."""
    if options.database not in connections:
        raise BackfillError(
            f"Unknown database alias {options.database!r}: use one of {', '.join(connections)}."
        )
    model, target = _target(options)
    set_sql, params = _source_sql(options, model, target)
    q = connections[options.database].ops.quote_name
    where = options.where if options.where is not None else f"{q(target.column)} IS NULL"
    if not where.strip():
        raise BackfillError(
            "The row filter is empty: leave it out to fill the NULL rows, or say which rows."
        )
    return BackfillPlan(
        options=options,
        target=f"{model._meta.app_label}.{model.__name__}.{target.name}",
        table=model._meta.db_table,
        pk_column=model._meta.pk.column,
        column=target.column,
        set_sql=set_sql,
        where=where,
        params=params,
    )


def cursor(database: str) -> psycopg.Cursor:
    """A server-side-binding cursor: one statement per call, so SQL given as an expression or a row
    filter cannot smuggle in a second one."""
    connection = connections[database]
    connection.ensure_connection()
    return psycopg.Cursor(connection.connection)


def plan_check(plan: BackfillPlan) -> None:
    """Have PostgreSQL parse and plan the batch statement (EXPLAIN, nothing runs); BackfillError if it refuses."""
    try:
        with transaction.atomic(using=plan.database), cursor(plan.database) as cur:
            cur.execute(
                f"EXPLAIN {plan.update_sql()}", {**plan.params, "after": START_KEY, "limit": 1}
            )
    except (DatabaseError, psycopg.Error) as exc:
        raise BackfillError(
            f"PostgreSQL rejects this backfill: {error_text(exc)}. Check the expression, value and row filter."
        ) from exc


def rows_to_fill(plan: BackfillPlan) -> int:
    q = connections[plan.database].ops.quote_name
    with cursor(plan.database) as cur:
        cur.execute(f"SELECT count(*) FROM {q(plan.table)} WHERE ({plan.where})")  # noqa: S608 (as above)
        return cur.fetchone()[0]


def key_range(plan: BackfillPlan) -> tuple[int | None, int | None]:
    q = connections[plan.database].ops.quote_name
    with cursor(plan.database) as cur:
        cur.execute(
            f"SELECT min({q(plan.pk_column)}), max({q(plan.pk_column)}) FROM {q(plan.table)}"  # noqa: S608 (quoted)
        )
        return cur.fetchone()
