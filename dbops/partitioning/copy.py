"""Step 3 of a conversion: copy a table's history into its partitioned copy with the backfill
engine, so the copy is batched, throttled, resumable and recorded like any backfill.

The engine runs one statement per batch that takes the next keys after the checkpoint and returns
(the last key covered, rows written), and moves the checkpoint (``dbops.BackfillRun``) in the same
transaction. ``CopyPlan`` is a ``BackfillPlan`` whose statement is an ``INSERT ... SELECT`` into
the copy instead of an ``UPDATE``: everything else (adaptive batch size, retries and splits,
the lease, pauses for replica lag, the run's row in the admin) is the engine's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.db import connections

from dbops.backfill import BackfillOptions, BackfillPlan, Expression, Progress, backfill
from dbops.models import BackfillRun
from dbops.partitioning import catalog, sql
from dbops.partitioning.convert import Conversion, PartitioningError, state

INTEGER_TYPES = ("smallint", "integer", "bigint")


@dataclass
class CopyPlan(BackfillPlan):
    """The rows of ``table`` copied into ``copy``, in keyset batches on the primary key."""

    copy: str = ""
    columns: tuple[str, ...] = ()
    key: tuple[str, ...] = ()

    @property
    def recorded_options(self) -> dict:
        return {"copy_to": self.copy, "columns": list(self.columns)}

    def update_sql(self, *, first: bool = False) -> str:
        q = connections[self.database].ops.quote_name
        return sql.copy_batch_sql(
            q,
            self.table,
            self.copy,
            self.key_columns[0],
            self.key_types[0],
            self.columns,
            self.key,
            first=first,
        )


@dataclass(frozen=True)
class CopyOptions:
    """How fast to copy; the backfill's own defaults unless said otherwise."""

    batch_size: int = BackfillOptions.batch_size
    target_batch_ms: float = BackfillOptions.target_batch_ms
    sleep: float = BackfillOptions.sleep
    lock_timeout_ms: int = BackfillOptions.lock_timeout_ms
    statement_timeout_ms: int = BackfillOptions.statement_timeout_ms
    max_replica_lag_ms: float | None = None


def copy_plan(conv: Conversion, options: CopyOptions, *, database: str = "default") -> CopyPlan:
    """The plan for copying ``conv.table`` into its copy; PartitioningError when it cannot be."""
    connection = connections[database]
    pk = catalog.primary_key(connection, conv.table)
    pk_type = _column_type(connection, conv.table, pk[1][0]) if pk is not None else None
    if pk is None or len(pk[1]) != 1 or pk_type not in INTEGER_TYPES:
        raise PartitioningError(
            f"{conv.table} needs a one-column integer primary key: the copy runs in keyset batches on it."
        )
    backfill_options = BackfillOptions(
        model_label=conv.table,
        field_name=f"(rows copied to {conv.copy})",
        source=Expression("INSERT ... SELECT"),
        database=database,
        batch_size=options.batch_size,
        target_batch_ms=options.target_batch_ms,
        sleep=options.sleep,
        lock_timeout_ms=options.lock_timeout_ms,
        statement_timeout_ms=options.statement_timeout_ms,
        max_replica_lag_ms=options.max_replica_lag_ms,
    )
    return CopyPlan(
        options=backfill_options,
        target=f"copy {conv.table} -> {conv.copy}",
        table=conv.table,
        key_columns=(pk[1][0],),
        key_types=(pk_type,),
        column="",
        set_sql="",
        where="true",
        copy=conv.copy,
        columns=tuple(catalog.columns(connection, conv.copy)),
        key=catalog.primary_key(connection, conv.copy)[1],
    )


def _column_type(connection, table: str, column: str) -> str | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT format_type(atttypid, NULL) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attname = %s",
            [table, column],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def history_copy(
    conv: Conversion,
    options: CopyOptions = CopyOptions(),
    *,
    database: str = "default",
    progress: Callable[[Progress], None] | None = None,
) -> BackfillRun | None:
    """Step 3: copy every row of the table that is not in the copy yet; resumes a run that was
    killed. None when there is nothing to copy (an empty table, or the swap is done)."""
    connection = connections[database]
    current = state(connection, conv)
    if current == "before":
        raise PartitioningError(f"{conv.copy} does not exist: create it first.")
    if current != "copying":
        return None
    if not catalog.trigger_exists(connection, conv.table, sql.SYNC_TRIGGER):
        raise PartitioningError(
            f"{conv.table} has no trigger keeping {conv.copy} in step: install it before the "
            "history copy, or rows written meanwhile would be missed."
        )
    plan = copy_plan(conv, options, database=database)
    q = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT max({q(plan.key_columns[0])}) FROM {q(conv.table)}")  # noqa: S608 (quoted)
        upper = cursor.fetchone()[0]
    if upper is None:
        return None
    # Every row written since the trigger exists is in the copy already, through the trigger:
    # the copy stops at the largest key now (CREATE TRIGGER waited for every writer before it),
    # instead of chasing the writers' newest rows.
    plan.params = {"upper": upper}
    return backfill(plan, progress=progress)
