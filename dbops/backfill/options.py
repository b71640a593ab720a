"""What a backfill is asked to do: one typed object, the only place its defaults live.

``manage.py backfill_column`` parses its flags into ``BackfillOptions``; the library never sees a
flag name, and tests and benchmarks build the same object directly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Value:
    """Write one literal, converted and validated by the field."""

    text: str


@dataclass(frozen=True)
class FromField:
    """Copy another column of the same row."""

    field_name: str


@dataclass(frozen=True)
class Expression:
    """Write an SQL expression over the row (the operator's own SQL, one expression)."""

    sql: str


Source = Value | FromField | Expression


@dataclass(frozen=True)
class BackfillOptions:
    model_label: str  # app_label.Model
    field_name: str
    source: Source
    where: str | None = None  # SQL; None means "<field> IS NULL"
    database: str = "default"
    batch_size: int = 1000  # rows in the first batch; then adapts toward target_batch_ms
    # Short batches: a live write that meets a batch waits for it, so the batch's length is the
    # writers' worst case. 50 ms bounds that; 200 ms ran faster in some runs but let a write wait
    # up to 0.7 s in the backfill benchmark.
    target_batch_ms: float = 50
    sleep: float = 0.0  # seconds between batches
    lock_timeout_ms: int = 2000
    statement_timeout_ms: int = 30_000
    # Each batch's commit waits for its WAL to reach the disk (on) or not (off: the batch and its
    # checkpoint commit together, so a crash that loses the commit loses both and the run does the
    # batch again). Off by default: on, the backfill's backend waited on its own WAL flushes and
    # ran at 0.75x a single UPDATE against 1.00x off, writers' p99 alike, measured side by side.
    synchronous_commit: bool = False
    # Throttling on the database's health (dbops/backfill/throttle.py); None: the DBOPS setting.
    # Pause between batches while the replica lags more than this; None: the router's ceiling
    # (DBOPS["REPLICA_MAX_LAG_MS"]). No replica configured: never pauses.
    max_replica_lag_ms: float | None = None
    # Pause when a session waited longer than this behind a batch's row locks (0: never);
    # None: DBOPS["BACKFILL_MAX_LOCK_WAIT_MS"].
    max_lock_wait_ms: float | None = None
    # Pause while a VACUUM (autovacuum or not) works on the table; None: DBOPS["BACKFILL_PAUSE_ON_VACUUM"].
    pause_on_vacuum: bool | None = None
    # Pause while the server writes WAL faster than this, in bytes per second (0: never);
    # None: DBOPS["BACKFILL_MAX_WAL_BYTES_PER_S"].
    max_wal_bytes_per_s: float | None = None
    restart: bool = False  # abandon an unfinished run of the same target and start over
