"""Fill a column in keyset batches on the primary key, one short transaction per batch, resumable.

Each batch is one statement: pick the next ``batch_size`` primary keys after the checkpoint, update
the rows among them that match ``where``; the checkpoint (``dbops.BackfillRun.last_pk``) moves in
the same transaction. So a batch is all or nothing, a killed run resumes exactly after the last
committed batch, and no row is updated twice. No lock is held between batches.

Failure behaviour: a batch that hits a statement or lock timeout, a deadlock or a serialization
failure is retried; a batch that keeps failing, for those or any other reason (a constraint the new
values break, say), is split in half, down to one row. A single row that still fails stops the run
with status ``failed``: the checkpoint is right before that row, the error is recorded, and running
the same command again (after fixing the cause) resumes there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from dbops.backfill import lease, throttle
from dbops.backfill.plan import (
    MAX_BATCH,
    MIN_BATCH,
    START_KEY,
    BackfillError,
    BackfillPlan,
    cursor,
    key_range,
    plan_check,
)
from dbops.errors import QUERY_CANCELED, TRANSACTION_RETRYABLE, error_text
from dbops.models import BackfillRun, BackfillStatus
from dbops.retry import call_with_retries
from dbops.timeouts import transaction_timeouts

# A statement timeout may pass on a second try (a lock freed, a cache warmed) as well as the rest.
BATCH_RETRYABLE = TRANSACTION_RETRYABLE | {QUERY_CANCELED}
TRIES_PER_SIZE = 3


@dataclass
class Progress:
    run: BackfillRun
    rate: float  # rows per second over the run so far
    fraction: float  # of the key range covered
    eta_s: float | None


@dataclass(frozen=True)
class Batch:
    upper: int | None  # the last primary key covered; None when no rows were left
    filled: int
    elapsed_ms: float


def _runs(plan: BackfillPlan):
    return BackfillRun.objects.using(plan.database)


def _run_acquire(plan: BackfillPlan, owner: str) -> BackfillRun:
    """The unfinished run of this target (or a new one), its lease taken by ``owner``."""
    try:
        with transaction.atomic(using=plan.database):
            return _run_acquire_locked(plan, owner)
    except IntegrityError as exc:
        # Another process created the unfinished run between our look and our insert.
        raise lease.refuse_busy(plan, "a run that started at the same moment") from exc


def _run_acquire_locked(plan: BackfillPlan, owner: str) -> BackfillRun:
    unfinished = (
        _runs(plan)
        .select_for_update()
        .filter(
            target=plan.target,
            database=plan.database,
            status__in=[BackfillStatus.RUNNING, BackfillStatus.FAILED],
        )
        .annotate(lease_live=lease.live())
        .first()
    )
    if unfinished is not None and lease.holder_alive(unfinished.lease_owner, unfinished.lease_live):
        raise lease.refuse_busy(plan, unfinished.lease_owner)
    if unfinished is not None and plan.options.restart:
        unfinished.status = BackfillStatus.ABANDONED
        unfinished.finished_at = timezone.now()
        unfinished.lease_owner = ""
        unfinished.save(
            using=plan.database,
            update_fields=["status", "finished_at", "lease_owner", "updated_at"],
        )
        unfinished = None
    if unfinished is None:
        run = _runs(plan).create(
            target=plan.target,
            database=plan.database,
            options=plan.recorded_options,
            last_pk=None,
            max_pk=key_range(plan)[1],
            batch_size=plan.batch_size,
            lease_owner=owner,
        )
        _runs(plan).filter(pk=run.pk).update(lease_expires_at=lease.expires(plan))
        return run
    if unfinished.options != plan.recorded_options:
        raise BackfillError(
            f"An unfinished run (#{unfinished.pk}, {unfinished.rows_done:,} rows done) of {plan.target} used "
            f"different options: {unfinished.options}. Run it again with those options to resume, "
            "or pass --restart to abandon it and start over."
        )
    _runs(plan).filter(pk=unfinished.pk).update(
        status=BackfillStatus.RUNNING,
        last_error="",
        batch_size=plan.batch_size,
        lease_owner=owner,
        lease_expires_at=lease.expires(plan),
        updated_at=timezone.now(),
    )
    unfinished.refresh_from_db(using=plan.database)
    return unfinished


def backfill(
    plan: BackfillPlan, *, progress: Callable[[Progress], None] | None = None
) -> BackfillRun:
    """Run (or resume) the backfill to the end; returns the finished run. Raises BackfillError.

    One run per target at a time, across processes and hosts, through a lease in the run's row
    (``dbops.backfill.lease``): no session state, so it works behind PgBouncer too.
    """
    plan_check(plan)
    owner = lease.owner_new()
    try:
        run = _run_acquire(plan, owner)
        try:
            return _batches(plan, run, progress, owner)
        finally:
            _lease_release(plan, run, owner)
    finally:
        lease.owner_done(owner)


def _lease_release(plan: BackfillPlan, run: BackfillRun, owner: str) -> None:
    try:
        _runs(plan).filter(pk=run.pk, lease_owner=owner).update(
            lease_owner="", lease_expires_at=None
        )
    except DatabaseError:
        pass  # the connection is gone: the lease lapses, or the next run here sees we are gone


def _batch(plan: BackfillPlan, run: BackfillRun, after: int, size: int, owner: str) -> Batch:
    options = plan.options
    with transaction.atomic(using=plan.database):
        transaction_timeouts(
            lock_ms=options.lock_timeout_ms,
            statement_ms=options.statement_timeout_ms,
            using=plan.database,
        )
        with cursor(plan.database) as cur:
            started = time.perf_counter()
            cur.execute(plan.update_sql(), {**plan.params, "after": after, "limit": size})
            upper, filled = cur.fetchone()
            elapsed_ms = (time.perf_counter() - started) * 1000
        if upper is not None:
            # The checkpoint commits with the batch: both happen, or neither. So does the lease's
            # renewal: a run that lost its lease rolls its batch back.
            kept = (
                _runs(plan)
                .filter(pk=run.pk, lease_owner=owner)
                .update(
                    last_pk=upper,
                    rows_done=F("rows_done") + filled,
                    batches=F("batches") + 1,
                    batch_size=size,
                    lease_expires_at=lease.expires(plan),
                    updated_at=timezone.now(),
                )
            )
            if not kept:
                raise BackfillError(
                    f"Run #{run.pk} of {plan.target} lost its lease to another run (this one was "
                    "stalled longer than the lease); it stopped without writing this batch."
                )
    return Batch(upper, filled, elapsed_ms)


def _next_size(plan: BackfillPlan, size: int, elapsed_ms: float) -> int:
    """Toward the target duration, at most doubling or halving per batch."""
    if elapsed_ms <= 0:
        return size
    wanted = size * plan.options.target_batch_ms / elapsed_ms
    return int(min(MAX_BATCH, max(MIN_BATCH, size / 2, min(size * 2, wanted))))


def _batch_with_retries(
    plan: BackfillPlan, run: BackfillRun, after: int, size: int, owner: str
) -> Batch:
    def count_retry(exc, attempt):
        _runs(plan).filter(pk=run.pk).update(retries=F("retries") + 1)

    return call_with_retries(
        lambda: _batch(plan, run, after, size, owner),
        attempts=TRIES_PER_SIZE,
        retryable=BATCH_RETRYABLE,
        base_delay=0.2,
        max_delay=1.0,
        what=f"backfill {plan.target} batch after {after}",
        on_retry=count_retry,
    )


def _batches(plan: BackfillPlan, run: BackfillRun, progress, owner: str) -> BackfillRun:
    started = time.monotonic()
    rows_at_start = run.rows_done
    after = run.last_pk if run.last_pk is not None else START_KEY
    min_pk, _ = key_range(plan)
    size = plan.batch_size
    longest = run.longest_batch_ms
    while True:
        try:
            batch = _batch_with_retries(plan, run, after, size, owner)
        except (DatabaseError, psycopg.Error) as exc:
            if size == MIN_BATCH:
                _fail(plan, run, after, exc)
            # Halve: a timeout may pass with fewer rows, and a bad row is narrowed down to one,
            # so the rows before it are filled and the checkpoint stops right before it.
            size = max(MIN_BATCH, size // 2)
            _runs(plan).filter(pk=run.pk).update(splits=F("splits") + 1)
            continue
        longest = max(longest, batch.elapsed_ms)
        if batch.upper is None:
            break
        # What the checkpoint just committed, kept here rather than read back (a round trip per
        # batch; under a busy server round trips are what short batches pay for).
        run.last_pk, run.batch_size = batch.upper, size
        run.rows_done += batch.filled
        run.batches += 1
        after = batch.upper
        size = _next_size(plan, size, batch.elapsed_ms)
        if progress is not None:
            progress(_progress(run, started, rows_at_start, min_pk, after))
        _replica_wait(plan, run, owner)
        if plan.options.sleep:
            time.sleep(plan.options.sleep)
    run.refresh_from_db(using=plan.database)  # with the retries and splits counted in the database
    run.status = BackfillStatus.DONE
    run.finished_at = timezone.now()
    run.longest_batch_ms = longest
    run.save(
        using=plan.database,
        update_fields=["status", "finished_at", "longest_batch_ms", "updated_at"],
    )
    return run


def _replica_wait(plan: BackfillPlan, run: BackfillRun, owner: str) -> None:
    """While the replica lags past the threshold, wait (renewing the lease) and count the pause."""

    def renew():
        _runs(plan).filter(pk=run.pk, lease_owner=owner).update(
            lease_expires_at=lease.expires(plan)
        )

    def paused(lag_ms):
        # Counted when it begins, so the admin shows a run that is waiting right now.
        _runs(plan).filter(pk=run.pk).update(replica_pauses=F("replica_pauses") + 1)
        run.replica_pauses += 1

    waited = throttle.wait_for_replica(plan, renew=renew, paused=paused)
    if waited:
        _runs(plan).filter(pk=run.pk).update(replica_paused_s=F("replica_paused_s") + waited)
        run.replica_paused_s += waited


def _progress(
    run: BackfillRun, started: float, rows_at_start: int, min_pk: int | None, after: int
) -> Progress:
    duration = max(time.monotonic() - started, 1e-6)
    fraction = _fraction(min_pk, run.max_pk, after)
    eta = duration / fraction * (1 - fraction) if 0 < fraction < 1 else None
    return Progress(
        run=run, rate=(run.rows_done - rows_at_start) / duration, fraction=fraction, eta_s=eta
    )


def _fraction(min_pk: int | None, max_pk: int | None, done_to: int) -> float:
    if min_pk is None or max_pk is None or max_pk <= min_pk:
        return 1.0
    return max(0.0, min(1.0, (done_to - min_pk + 1) / (max_pk - min_pk + 1)))


def _fail(plan: BackfillPlan, run: BackfillRun, after: int, exc: Exception):
    message = error_text(exc)
    where = "at the first row" if after == START_KEY else f"at the row after primary key {after}"
    try:
        _runs(plan).filter(pk=run.pk).update(
            status=BackfillStatus.FAILED, last_error=message, updated_at=timezone.now()
        )
    except DatabaseError:
        pass  # the connection died with the batch; the run stays 'running' and resumes the same way
    raise BackfillError(
        f"The backfill stopped {where}: {message}. Run #{run.pk} keeps its checkpoint; fix the cause and run "
        "the same command again to resume."
    ) from exc
