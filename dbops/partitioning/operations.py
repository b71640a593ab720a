"""Migration operations that convert a live table to a time-partitioned one, and index it.

Put them in migrations with ``atomic = False`` (each refuses a transaction, naming the fix): every
step opens its own short transactions, and the history copy commits batch by batch. In order, one
or more per migration::

    CreatePartitionedCopy("shop_ledgerentry", "created_at", interval="month", ahead=3,
                          uniques_elsewhere={"ledger_key_per_account": "..."}),
    SyncToPartitionedCopy("shop_ledgerentry"),
    CopyRowsToPartitionedCopy("shop_ledgerentry"),
    VerifyPartitionedCopy("shop_ledgerentry", "created_at", sums=["amount"]),
    SwapPartitionedCopy("shop_ledgerentry"),
    # ... a later release:
    DropTableKeptForRollback("shop_ledgerentry"),

Each is safe to run again after a failure or a kill (it looks at the catalog and does what is
left), and each reverses, except the last (a dropped table's rows are gone). None changes Django's
migration state: the model stays the same table under the same name.

``blocks_traffic = False`` tells the migration safety check (``dbops.migration_safety``) that
these operations take their locks briefly, under a lock timeout, and are safe on a busy table.
"""

from __future__ import annotations

import sys
import time

from django.contrib.postgres.operations import NotInTransactionMixin
from django.db import router
from django.db.migrations import AddIndex
from django.db.migrations.exceptions import IrreversibleError
from django.db.migrations.operations.base import Operation

from dbops.partitioning import convert, indexes, swap
from dbops.partitioning.convert import (
    DEFAULT_ATTEMPTS,
    DEFAULT_LOCK_TIMEOUT_MS,
    Conversion,
    Timeouts,
)
from dbops.partitioning.copy import CopyOptions, history_copy
from dbops.partitioning.ranges import interval_get


class _TableOperation(NotInTransactionMixin, Operation):
    """An operation on a table by name, outside a transaction, state untouched."""

    reversible = True
    reduces_to_sql = False
    blocks_traffic = False  # read by dbops.migration_safety
    arguments: tuple[str, ...] = ("table",)
    defaults: dict = {"lock_timeout_ms": DEFAULT_LOCK_TIMEOUT_MS, "attempts": DEFAULT_ATTEMPTS}

    def __init__(
        self, table, *, lock_timeout_ms=DEFAULT_LOCK_TIMEOUT_MS, attempts=DEFAULT_ATTEMPTS
    ):
        if int(lock_timeout_ms) < 1 or int(attempts) < 1:
            raise ValueError(f"{type(self).__name__}: lock_timeout_ms and attempts must be >= 1")
        self.table = table
        self.lock_timeout_ms = lock_timeout_ms
        self.attempts = attempts

    @property
    def timeouts(self) -> Timeouts:
        return Timeouts(int(self.lock_timeout_ms), int(self.attempts))

    def deconstruct(self):
        kwargs = {name: getattr(self, name) for name in self.arguments}
        for name, default in self.defaults.items():
            if getattr(self, name) != default:
                kwargs[name] = getattr(self, name)
        return type(self).__name__, [], kwargs

    def state_forwards(self, app_label, state):
        pass

    def _connection(self, app_label, schema_editor):
        """The connection, once sure to be outside a transaction; None when a router says no."""
        self._ensure_not_in_transaction(schema_editor)
        connection = schema_editor.connection
        return connection if router.allow_migrate(connection.alias, app_label) else None

    def _conversion(self) -> Conversion:
        return Conversion(self.table, "")

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        self._connection(app_label, schema_editor)  # nothing to undo, but not in a transaction


class CreatePartitionedCopy(_TableOperation):
    """Create ``<table>_partitioned``: range-partitioned on ``column`` by ``interval``, partitions
    from the oldest row to ``ahead`` intervals past now. Reversed: dropped (with its trigger)."""

    arguments = ("table", "column")
    defaults = {
        **_TableOperation.defaults,
        "interval": "month",
        "ahead": 3,
        "uniques_elsewhere": {},
    }

    def __init__(
        self,
        table,
        column,
        *,
        interval="month",
        ahead=3,
        uniques_elsewhere=None,
        lock_timeout_ms=DEFAULT_LOCK_TIMEOUT_MS,
        attempts=DEFAULT_ATTEMPTS,
    ):
        super().__init__(table, lock_timeout_ms=lock_timeout_ms, attempts=attempts)
        interval_get(interval)
        if int(ahead) < 1:
            raise ValueError("CreatePartitionedCopy: ahead must be >= 1")
        self.column = column
        self.interval = interval
        self.ahead = ahead
        self.uniques_elsewhere = dict(uniques_elsewhere or {})

    def _conversion(self) -> Conversion:
        return Conversion(
            self.table, self.column, self.interval, int(self.ahead), self.uniques_elsewhere
        )

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if connection := self._connection(app_label, schema_editor):
            convert.copy_create(connection, self._conversion(), timeouts=self.timeouts)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if connection := self._connection(app_label, schema_editor):
            convert.copy_drop(connection, self._conversion(), timeouts=self.timeouts)

    def describe(self):
        return f"Create a copy of {self.table} partitioned by {self.interval} of {self.column}"


class SyncToPartitionedCopy(_TableOperation):
    """A trigger on ``table`` that keeps its partitioned copy equal to it. Reversed: removed."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if connection := self._connection(app_label, schema_editor):
            convert.sync_install(connection, self._conversion(), timeouts=self.timeouts)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if connection := self._connection(app_label, schema_editor):
            convert.sync_remove(connection, self._conversion(), timeouts=self.timeouts)

    def describe(self):
        return f"Keep the partitioned copy of {self.table} in step with a trigger"


class CopyRowsToPartitionedCopy(_TableOperation):
    """The table's rows copied into its partitioned copy with the backfill engine (batched,
    throttled, resumable, a ``dbops.BackfillRun``). Reversed: nothing (the copy goes with
    ``CreatePartitionedCopy``'s reverse)."""

    arguments = ("table",)
    defaults = {
        "batch_size": 1000,
        "target_batch_ms": 50.0,
        "sleep": 0.0,
        "max_replica_lag_ms": None,
    }

    def __init__(
        self, table, *, batch_size=1000, target_batch_ms=50.0, sleep=0.0, max_replica_lag_ms=None
    ):
        self.table = table
        self.batch_size = batch_size
        self.target_batch_ms = target_batch_ms
        self.sleep = sleep
        self.max_replica_lag_ms = max_replica_lag_ms

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if connection := self._connection(app_label, schema_editor):
            options = CopyOptions(
                batch_size=int(self.batch_size),
                target_batch_ms=float(self.target_batch_ms),
                sleep=float(self.sleep),
                max_replica_lag_ms=self.max_replica_lag_ms,
            )
            history_copy(self._conversion(), options, database=connection.alias, progress=_progress)

    def describe(self):
        return f"Copy the rows of {self.table} into its partitioned copy, in batches"


def _progress(p) -> None:
    """A line on stderr every few seconds while migrate copies (migrate shows nothing else)."""
    now = time.monotonic()
    if now - getattr(_progress, "last", 0) >= 5 or p.fraction >= 1:
        _progress.last = now
        sys.stderr.write(
            f"  {p.run.target}: {p.run.rows_done:,} rows ({p.fraction:.0%}), {p.rate:,.0f} rows/s\n"
        )


class VerifyPartitionedCopy(_TableOperation):
    """Compare the table and its copy per interval (rows, sums, a checksum of every row) in one
    snapshot; stop with the intervals that differ. Reversed: nothing."""

    arguments = ("table", "column")
    defaults = {"interval": "month", "sums": []}

    def __init__(self, table, column, *, interval="month", sums=()):
        interval_get(interval)
        self.table = table
        self.column = column
        self.interval = interval
        self.sums = list(sums)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if connection := self._connection(app_label, schema_editor):
            conv = Conversion(self.table, self.column, self.interval)
            convert.verify_or_raise(connection, conv, sums=self.sums)

    def describe(self):
        return f"Verify the partitioned copy of {self.table} against it"


class SwapPartitionedCopy(_TableOperation):
    """In one short transaction: the copy becomes ``table``, the table becomes ``<table>_old``,
    kept equal by the trigger turned around. Reversed: swapped back the same way."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if connection := self._connection(app_label, schema_editor):
            swap.swap(connection, self._conversion(), timeouts=self.timeouts)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if connection := self._connection(app_label, schema_editor):
            swap.swap(connection, self._conversion(), timeouts=self.timeouts, backward=True)

    def describe(self):
        return f"Swap {self.table} with its partitioned copy"


class DropTableKeptForRollback(_TableOperation):
    """Drop ``<table>_old`` and the trigger that kept it. Irreversible: its rows are gone, and
    the way back they were kept for with them."""

    reversible = False

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if connection := self._connection(app_label, schema_editor):
            swap.kept_drop(connection, self._conversion(), timeouts=self.timeouts)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        raise IrreversibleError(
            f"Dropping {self.table}'s old table cannot be undone: its rows are gone. To go back "
            "to a plain table, convert again the other way from a restored backup."
        )

    def describe(self):
        return f"Drop the old {self.table} kept for a way back"


class AddIndexOnPartitions(NotInTransactionMixin, AddIndex):
    """``AddIndex`` for a partitioned table, without blocking writes: the index on the parent only
    (INVALID), then per partition built concurrently and attached. Resumable; reversed: dropped."""

    blocks_traffic = False  # read by dbops.migration_safety

    def __init__(
        self,
        model_name,
        index,
        *,
        lock_timeout_ms=DEFAULT_LOCK_TIMEOUT_MS,
        attempts=DEFAULT_ATTEMPTS,
    ):
        super().__init__(model_name, index)
        self.lock_timeout_ms = lock_timeout_ms
        self.attempts = attempts

    def deconstruct(self):
        name, args, kwargs = super().deconstruct()
        if self.lock_timeout_ms != DEFAULT_LOCK_TIMEOUT_MS:
            kwargs["lock_timeout_ms"] = self.lock_timeout_ms
        if self.attempts != DEFAULT_ATTEMPTS:
            kwargs["attempts"] = self.attempts
        return name, args, kwargs

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        self._ensure_not_in_transaction(schema_editor)
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return

        def create_sql(on: str, name: str, concurrently: bool) -> str:
            statement = self.index.create_sql(model, schema_editor, concurrently=concurrently)
            statement.parts["table"] = on
            statement.parts["name"] = schema_editor.quote_name(name)
            return str(statement)

        indexes.partitioned_index_build(
            schema_editor.connection,
            model._meta.db_table,
            self.index.name,
            create_sql,
            timeouts=Timeouts(int(self.lock_timeout_ms), int(self.attempts)),
        )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        self._ensure_not_in_transaction(schema_editor)
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            indexes.partitioned_index_drop(
                schema_editor.connection,
                self.index.name,
                timeouts=Timeouts(int(self.lock_timeout_ms), int(self.attempts)),
            )

    def describe(self):
        return f"{super().describe()}, partition by partition, concurrently"
