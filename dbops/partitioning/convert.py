"""Convert a live table into a table partitioned by time, step by step, while it is written.

The steps (each idempotent: run again after a failure or a kill, it finishes or does nothing):

1. ``copy_create``: an empty partitioned copy (``<table>_partitioned``), range-partitioned on the
   time column, with partitions from the oldest row's interval to ``ahead`` intervals past now;
   columns, defaults, identity, CHECKs, indexes and foreign keys as the table has them; the primary
   key gets the partition column (PostgreSQL requires it in every unique index of a partitioned
   table). A unique index without the partition column cannot be copied: its guarantee must be kept
   elsewhere, and the caller says where (``uniques_elsewhere``), or the step refuses.
2. ``sync_install``: a trigger on the table keeps the copy equal to it, row by row, from the moment
   it exists (``CREATE TRIGGER`` waits for the transactions writing the table, so no write before it
   can be missed by the history copy that starts after it).
3. The history: ``dbops.partitioning.copy`` copies the rows in batches with the backfill engine.
4. ``copy_verify``: rows, sums and a checksum of every row, per interval, of both tables in one
   snapshot; any difference stops with the intervals that differ.
5. ``dbops.partitioning.swap.swap``: in one short transaction under ``lock_timeout``, retried:
   the tables, their indexes and the identity sequence trade names, and the trigger turns around,
   keeping the old table (``<table>_old``) equal to the new one; ``swap(backward=True)`` is the
   way back. It requires the mark ``verify_or_raise`` leaves on the copy.
6. ``dbops.partitioning.swap.kept_drop``: drop the old table and its trigger, once nobody wants
   the way back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from django.db import OperationalError, transaction

from dbops.errors import DEADLOCK, LOCK_NOT_AVAILABLE, sqlstate
from dbops.partitioning import catalog, sql
from dbops.partitioning.ranges import (
    Interval,
    PartitioningError,
    bound_literal,
    interval_get,
    name_for,
    partition_name,
)
from dbops.retry import call_with_retries
from dbops.timeouts import lock_timeout, statement_timeout

logger = logging.getLogger("dbops.partitioning")

COPY_SUFFIX = "_p"  # the copy's indexes and sequence, until the swap gives them the real names
OLD_SUFFIX = "_old"  # the old table's, after the swap
DEFAULT_LOCK_TIMEOUT_MS = 1000
DEFAULT_ATTEMPTS = 10
VERIFIED_MARK = "dbops.partitioning: verified against"
R = TypeVar("R")


@dataclass(frozen=True)
class Conversion:
    """What to convert: the table, its time column, and the partitions to make."""

    table: str
    column: str
    interval: str = "month"
    ahead: int = 3
    # Unique index of the table (without the partition column) -> where its guarantee lives now.
    uniques_elsewhere: Mapping[str, str] = field(default_factory=dict)

    @property
    def copy(self) -> str:
        return name_for(self.table, "_partitioned")

    @property
    def old(self) -> str:
        return name_for(self.table, "_old")

    @property
    def unit(self) -> Interval:
        return interval_get(self.interval)


@dataclass(frozen=True)
class Timeouts:
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS
    attempts: int = DEFAULT_ATTEMPTS


def short_transaction(connection, work: Callable[[], R], *, what: str, timeouts: Timeouts) -> R:
    """``work()`` in a transaction of its own under ``lock_timeout``; a lock timeout or a deadlock
    rolls it back and runs it again with backoff, at most ``attempts`` times in all."""

    def attempt() -> R:
        with (
            transaction.atomic(using=connection.alias),
            lock_timeout(timeouts.lock_timeout_ms, using=connection.alias),
        ):
            return work()

    def warn(exc, attempt_number):
        logger.warning(
            "%s: lock wait gave up, attempt %d of %d", what, attempt_number, timeouts.attempts
        )

    try:
        return call_with_retries(
            attempt,
            attempts=timeouts.attempts,
            retryable={LOCK_NOT_AVAILABLE, DEADLOCK},
            base_delay=0.1,
            max_delay=2.0,
            what=what,
            on_retry=warn,
        )
    except OperationalError as exc:
        if sqlstate(exc) not in (LOCK_NOT_AVAILABLE, DEADLOCK):
            raise
        raise PartitioningError(
            f"{what}: could not get its locks within {timeouts.lock_timeout_ms} ms in "
            f"{timeouts.attempts} attempts. A long transaction holds the table: find it with "
            "`manage.py db_doctor`, let it finish or end it, and run the migration again."
        ) from exc


def run_sql(connection, statements: str | Sequence[str]) -> None:
    with connection.cursor() as cursor:
        for statement in [statements] if isinstance(statements, str) else statements:
            cursor.execute(statement)


def fetch_one(connection, query: str, params=()):
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchone()


def state(connection, conv: Conversion) -> str:
    """'before' (the table is plain, no copy), 'copying' (plain table and its partitioned copy),
    'swapped' (the table is partitioned, the old one kept), 'done' (partitioned, no old table)."""
    table, copy, old = (catalog.relkind(connection, t) for t in (conv.table, conv.copy, conv.old))
    if table == "r":
        return "copying" if copy == "p" else "before"
    if table == "p":
        return "swapped" if old == "r" else "done"
    raise PartitioningError(f"There is no table {conv.table} to convert.")


# 1. The partitioned copy ------------------------------------------------------------------------


def _copy_checks(connection, conv: Conversion) -> tuple[str, tuple[str, ...]]:
    """The table's primary key (name, columns); PartitioningError for what the copy cannot keep."""
    if not catalog.column_not_null(connection, conv.table, conv.column):
        raise PartitioningError(
            f"{conv.table}.{conv.column} must exist and be NOT NULL to partition by it: a range "
            "partition has no place for NULL."
        )
    pk = catalog.primary_key(connection, conv.table)
    if pk is None or not pk[1]:
        raise PartitioningError(f"{conv.table} needs a primary key on plain columns.")
    referencing = catalog.referenced_by(connection, conv.table)
    if referencing:
        raise PartitioningError(
            f"{conv.table} is referenced by foreign keys ({', '.join(f'{t}.{c}' for c, t in referencing)}): "
            f"a foreign key to a partitioned table must name its whole primary key, with "
            f"{conv.column}. Change or drop those first."
        )
    for index in catalog.indexes(connection, conv.table):
        lost = index.unique and not index.primary and conv.column not in index.columns
        if lost and index.name not in conv.uniques_elsewhere:
            raise PartitioningError(
                f"The unique index {index.name} of {conv.table} does not contain {conv.column}, so "
                "PostgreSQL cannot enforce it on a partitioned table. Keep that guarantee another "
                "way (a key table written by a trigger in the same transaction) and name it in "
                "uniques_elsewhere={index_name: 'where it is kept'}."
            )
    return pk


def _partition_starts(connection, conv: Conversion, now: datetime) -> list[datetime]:
    """From the oldest row's interval (or the one before now, if earlier) to ``ahead`` past now:
    a transaction that began before a month's end still writes a row dated in that month."""
    q = connection.ops.quote_name
    oldest = fetch_one(connection, f"SELECT min({q(conv.column)}) FROM {q(conv.table)}")[0]  # noqa: S608
    unit = conv.unit
    first = unit.shift(unit.floor(now), -1)
    if oldest is not None and oldest < first:
        first = oldest
    return unit.starts(first, unit.shift(unit.floor(now), conv.ahead))


def _copy_ddl(connection, conv: Conversion, pk: tuple[str, tuple[str, ...]], now) -> list[str]:
    q = connection.ops.quote_name
    copy, table = q(conv.copy), q(conv.table)
    key = [*pk[1], *([] if conv.column in pk[1] else [conv.column])]
    ddl = [
        f"CREATE TABLE {copy} (LIKE {table} INCLUDING DEFAULTS INCLUDING IDENTITY "
        "INCLUDING CONSTRAINTS INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS) "
        f"PARTITION BY RANGE ({q(conv.column)})",
        f"ALTER TABLE {copy} ADD CONSTRAINT {q(name_for(pk[0], COPY_SUFFIX))} "
        f"PRIMARY KEY ({', '.join(q(c) for c in key)})",
    ]
    for index in catalog.indexes(connection, conv.table):
        if not index.primary and index.name not in conv.uniques_elsewhere:
            unique = "UNIQUE " if index.unique else ""
            ddl.append(
                f"CREATE {unique}INDEX {q(name_for(index.name, COPY_SUFFIX))} ON {copy} {index.tail}"
            )
    unit = conv.unit
    for start in _partition_starts(connection, conv, now):
        ddl.append(
            f"CREATE TABLE {q(partition_name(conv.table, unit, start))} PARTITION OF {copy} FOR "
            f"VALUES FROM ({bound_literal(start)}) TO ({bound_literal(unit.shift(start))})"
        )
    # Last: each takes a SHARE ROW EXCLUSIVE lock on the table it references, until the commit.
    ddl += [
        f"ALTER TABLE {copy} ADD CONSTRAINT {q(name)} {definition}"
        for name, definition in catalog.foreign_keys(connection, conv.table)
    ]
    return ddl


def _copy_sequence_rename(connection, conv: Conversion, column: str) -> None:
    """The copy's identity sequence is named like the table's, with the copy's suffix, so the
    swap can hand the table's name over to it (and back)."""
    sequence, identity = catalog.sequence_of(connection, conv.table, column)
    copy_sequence, _ = catalog.sequence_of(connection, conv.copy, column)
    if identity and copy_sequence is not None:
        q = connection.ops.quote_name
        run_sql(
            connection,
            f"ALTER SEQUENCE {q(copy_sequence)} RENAME TO {q(name_for(sequence, COPY_SUFFIX))}",
        )


def copy_create(connection, conv: Conversion, *, timeouts: Timeouts, now=None) -> bool:
    """Step 1; False when there was nothing to do (the copy exists, or the swap is done)."""
    now = now or datetime.now(UTC)

    def work() -> bool:
        if state(connection, conv) != "before":
            return False
        pk = _copy_checks(connection, conv)
        run_sql(connection, _copy_ddl(connection, conv, pk, now))
        _copy_sequence_rename(connection, conv, pk[1][0])
        return True

    created = short_transaction(connection, work, what=f"creating {conv.copy}", timeouts=timeouts)
    if created:
        count = len(catalog.partitions(connection, conv.copy))
        logger.info("created %s with %d partitions", conv.copy, count)
    return created


def copy_drop(connection, conv: Conversion, *, timeouts: Timeouts) -> None:
    """The reverse of step 1 (and 2): while the table is still the plain one, drop its copy."""

    def work() -> None:
        if state(connection, conv) == "copying":
            _sync_drop(connection, conv.table, conv.copy)
            run_sql(connection, f"DROP TABLE IF EXISTS {connection.ops.quote_name(conv.copy)}")

    short_transaction(connection, work, what=f"dropping {conv.copy}", timeouts=timeouts)


# 2. The trigger ---------------------------------------------------------------------------------


def _sync_create(connection, source: str, target: str) -> None:
    """The trigger on ``source`` that keeps ``target`` equal to it, keyed on target's primary key."""
    q = connection.ops.quote_name
    function = sql.sync_function_name(source, target)
    key = catalog.primary_key(connection, target)[1]
    qualified = f"{q(catalog.schema(connection))}.{q(target)}"
    columns = catalog.columns(connection, target)
    run_sql(connection, sql.sync_function_sql(q, function, qualified, columns, key))
    if not catalog.trigger_exists(connection, source, sql.SYNC_TRIGGER):
        run_sql(connection, sql.sync_triggers_sql(q, source, function))


def _sync_drop(connection, source: str, target: str) -> None:
    q = connection.ops.quote_name
    run_sql(connection, sql.sync_drop_sql(q, source, sql.sync_function_name(source, target)))


def sync_install(connection, conv: Conversion, *, timeouts: Timeouts) -> bool:
    """Step 2; False when the swap is done already (the trigger then runs the other way)."""

    def work() -> bool:
        current = state(connection, conv)
        if current == "before":
            raise PartitioningError(f"{conv.copy} does not exist: create it first.")
        if current == "copying":
            _sync_create(connection, conv.table, conv.copy)
            return True
        return False

    return short_transaction(
        connection, work, what=f"the trigger on {conv.table}", timeouts=timeouts
    )


def sync_remove(connection, conv: Conversion, *, timeouts: Timeouts) -> None:
    def work() -> None:
        if state(connection, conv) == "copying":
            _sync_drop(connection, conv.table, conv.copy)

    short_transaction(connection, work, what=f"the trigger on {conv.table}", timeouts=timeouts)


# 4. Verify --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    interval: str
    table: tuple
    copy: tuple


def copy_verify(
    connection, conv: Conversion, *, sums: Sequence[str] = ()
) -> tuple[int, list[Difference]]:
    """Step 4: (rows compared, intervals that differ), the two tables read in one snapshot, so
    rows written meanwhile (to both, by the trigger, in one transaction) are in both or neither."""
    current = state(connection, conv)
    if current not in ("copying", "swapped"):
        return 0, []
    other = conv.copy if current == "copying" else conv.old
    q = connection.ops.quote_name
    pk = catalog.primary_key(connection, conv.table)[1][0]
    with transaction.atomic(using=connection.alias):
        run_sql(connection, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        with statement_timeout(0, using=connection.alias):
            totals = [
                _totals(
                    connection, sql.month_totals_sql(q, t, conv.column, conv.interval, pk, sums)
                )
                for t in (conv.table, other)
            ]
    differences = [
        Difference(key.isoformat(), totals[0].get(key, ()), totals[1].get(key, ()))
        for key in sorted(totals[0].keys() | totals[1].keys())
        if totals[0].get(key) != totals[1].get(key)
    ]
    return sum(row[0] for row in totals[0].values()), differences


def _totals(connection, query: str) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(query)
        return {row[0].astimezone(UTC): tuple(row[1:]) for row in cursor.fetchall()}


def verify_or_raise(connection, conv: Conversion, *, sums: Sequence[str] = ()) -> int:
    """``copy_verify``, failing loudly with every interval that differs; returns the rows."""
    rows, differences = copy_verify(connection, conv, sums=sums)
    if differences:
        names = ["rows", "sum of the key", *(f"sum({s})" for s in sums), "row checksum"]
        lines = [
            f"  {d.interval}: {conv.table} {dict(zip(names, d.table, strict=False))} "
            f"!= {dict(zip(names, d.copy, strict=False))}"
            for d in differences
        ]
        raise PartitioningError(
            f"{conv.table} and its copy differ in {len(differences)} interval(s):\n"
            + "\n".join(lines)
            + "\nNothing was swapped. Run the history copy again (it resumes), then verify again."
        )
    if state(connection, conv) == "copying":
        # The swap asks for this mark: from here on the trigger keeps the copy equal.
        when = datetime.now(UTC).isoformat(timespec="seconds")
        note = f"{VERIFIED_MARK} {conv.table}: {rows} rows, {when}"
        run_sql(
            connection,
            f"COMMENT ON TABLE {connection.ops.quote_name(conv.copy)} IS {literal(note)}",
        )
    logger.info("verified %s: %d rows, every interval equal", conv.table, rows)
    return rows


def verified(connection, conv: Conversion) -> bool:
    """Has ``verify_or_raise`` passed on the copy (and marked it so)?"""
    note = fetch_one(connection, "SELECT obj_description(%s::regclass, 'pg_class')", [conv.copy])[0]
    return bool(note and note.startswith(VERIFIED_MARK))


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
