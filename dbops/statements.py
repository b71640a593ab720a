"""Hot statements compiled once per process: the ORM writes the SQL, the hot path reuses it.

Building and compiling a queryset costs Django far more CPU than PostgreSQL spends running it
(``filter()``, ``resolve_expression``, ``copy`` and the compiler, on every call, for the same SQL).
A ``CompiledSelect`` or ``CompiledUpdate`` builds its queryset once per process and database alias
from example parameter values, records where each value landed among the SQL's parameters, and from
then on runs the same SQL text with new values through ``connection.cursor()``: execute wrappers
(query counts, the slow-query log, tests) see it like any other query, parameters are always bound,
and with prepared statements on (``dbops.pooling.prepared_statements``) psycopg prepares it on the server, since its text never changes.

The examples must be distinct values the fields can hold (Django compiles a filter on a value out
of a field's range to an empty result) and equal to no constant of the statement, and each must reach the SQL as a parameter: a value Django would
write into the SQL text (a slice's LIMIT) is refused at compile time rather than frozen into it.

``insert_sql`` writes an INSERT from a model's metadata, identifiers quoted by the backend: an
INSERT has no expression for the ORM to compile, only a column list.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Lookup, Model, QuerySet
from django.db.models.sql import UpdateQuery
from django.db.transaction import TransactionManagementError


class AnyOf(Lookup):
    """``<expression> = ANY(%s)`` with one array parameter: one statement (and one prepared plan)
    for one value or a hundred, where ``__in`` writes a different statement for each count.

    Used directly in a filter: ``Account.objects.filter(AnyOf(F("pk"), ids))``.
    """

    lookup_name = "any_of"
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        return f"{lhs} = ANY(%s)", (*lhs_params, list(self.rhs))


# A parameter slot: (index of the example, the type Django wrapped it in or None), or (None, a
# constant of the statement itself, such as the 1 of ``F("version") + 1``).
Slot = tuple[int | None, Any]


def _slots(name: str, params: Sequence[Any], examples: tuple) -> tuple[Slot, ...]:
    """Where each example landed among the SQL's parameters.

    Django may wrap a value (``Int4(5)`` for an integer in an expression, so psycopg binds it with
    a stable type): new values are wrapped the same way. Parameters equal to no example are the
    statement's own constants; so that an example cannot pass for one, every example must be found.
    """
    for i, a in enumerate(examples):
        for b in examples[i + 1 :]:
            if type(a) is type(b) and a == b:
                raise ValueError(f"{name}: the example values must be distinct ({a!r} twice)")

    def slot(param: Any) -> Slot:
        for i, example in enumerate(examples):
            if isinstance(param, type(example)) and param == example:
                return i, (None if type(param) is type(example) else type(param))
        return None, param

    slots = tuple(slot(p) for p in params)
    unused = set(range(len(examples))) - {i for i, _ in slots}
    if unused:
        raise ValueError(
            f"{name}: example {examples[min(unused)]!r} is not an SQL parameter (written into the "
            "SQL text, or changed by Django?): it cannot be bound with a new value"
        )
    return slots


def _bound(slots: tuple[Slot, ...], params: tuple) -> list:
    return [
        extra if i is None else params[i] if extra is None else extra(params[i])
        for i, extra in slots
    ]


class _Compiled:
    """The shared part: compile on first use per alias (thread-safe), run through a cursor."""

    def __init__(self, build: Callable[..., Any], *examples: Any, name: str = ""):
        self._build = build
        self._examples = examples
        self.name = name or getattr(build, "__qualname__", "statement")
        self._by_alias: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _get(self, connection):
        compiled = self._by_alias.get(connection.alias)
        if compiled is None:
            with self._lock:
                compiled = self._by_alias.get(connection.alias)
                if compiled is None:
                    compiled = self._by_alias[connection.alias] = self._compile(connection)
        return compiled

    def _compile(self, connection):
        raise NotImplementedError

    def sql(self, using: str | None = None) -> str:
        """The SQL text, as compiled for ``using``."""
        return self._get(connections[using or DEFAULT_DB_ALIAS])[0]


class CompiledSelect(_Compiled):
    """A SELECT written with the ORM (``build(*params) -> QuerySet``), compiled once."""

    def _compile(self, connection):
        queryset: QuerySet = self._build(*self._examples)
        compiler = queryset.query.get_compiler(connection=connection)
        sql, params = compiler.as_sql()
        expressions = [column for column, _, _ in compiler.select]
        converters = compiler.get_converters(expressions)
        fields = None
        if compiler.klass_info is not None and not compiler.klass_info.get("related_klass_infos"):
            fields = [expressions[i].target.attname for i in compiler.klass_info["select_fields"]]
        locks = bool(queryset.query.select_for_update)
        slots = _slots(self.name, params, self._examples)
        return sql, slots, converters, queryset.model, fields, locks

    def rows(self, *params: Any, using: str | None = None) -> list[tuple]:
        """The result rows (tuples), for new parameter values in the examples' order."""
        connection = connections[using or DEFAULT_DB_ALIAS]
        sql, slots, converters, _, _, locks = self._get(connection)
        if locks and connection.get_autocommit():
            # What Django checks when it compiles a select_for_update(): a lock outside a
            # transaction would be released at once.
            raise TransactionManagementError(
                "select_for_update cannot be used outside of a transaction."
            )
        with connection.cursor() as cursor:
            cursor.execute(sql, _bound(slots, params))
            rows = cursor.fetchall()
        if converters:
            rows = [_converted(row, converters, connection) for row in rows]
        return rows

    def objects(self, *params: Any, using: str | None = None) -> list[Model]:
        """The result as model instances, as the queryset would give them."""
        alias = using or DEFAULT_DB_ALIAS
        _, _, _, model, fields, _ = self._get(connections[alias])
        if fields is None:
            raise TypeError(f"{self.name}: objects() needs a queryset of model instances")
        return [model.from_db(alias, fields, row) for row in self.rows(*params, using=alias)]


def _converted(row: tuple, converters: dict, connection) -> tuple:
    """The row with the fields' and the backend's converters applied, as the ORM does."""
    values = list(row)
    for position, (functions, expression) in converters.items():
        for function in functions:
            values[position] = function(values[position], expression, connection)
    return tuple(values)


class CompiledUpdate(_Compiled):
    """An UPDATE written with the ORM: ``build(*params) -> (queryset, {field: value or F()})``,
    the arguments of ``queryset.update(**values)``, compiled once."""

    def _compile(self, connection):
        queryset, values = self._build(*self._examples)
        query = queryset.query.chain(UpdateQuery)
        query.add_update_values(values)
        sql, params = query.get_compiler(connection=connection).as_sql()
        return sql, _slots(self.name, params, self._examples)

    def execute(self, *params: Any, using: str | None = None) -> int:
        """Run it with new parameter values; the number of rows changed."""
        connection = connections[using or DEFAULT_DB_ALIAS]
        sql, slots = self._get(connection)
        with connection.cursor() as cursor:
            cursor.execute(sql, _bound(slots, params))
            return cursor.rowcount


@functools.cache
def insert_sql(
    model: type[Model],
    fields: tuple[str, ...],
    *,
    rows: int = 1,
    returning: tuple[str, ...] = (),
    using: str = DEFAULT_DB_ALIAS,
) -> str:
    """``INSERT INTO <table> (<columns>) VALUES (%s, ...)[, ...] [RETURNING <columns>]``.

    Columns left out take their database default (``db_default``), as they do for the ORM.
    """
    quote = connections[using].ops.quote_name
    meta = model._meta
    columns = ", ".join(quote(meta.get_field(name).column) for name in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    values = ", ".join([row] * rows)
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES {values}"  # noqa: S608 (quoted)
    if returning:
        sql += " RETURNING " + ", ".join(quote(meta.get_field(name).column) for name in returning)
    return sql
