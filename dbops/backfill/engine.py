"""Fill a column in keyset batches on the primary key, one short transaction per batch, resumable.

Each batch is one statement: pick the next ``batch_size`` primary keys after the checkpoint (any
key: an integer, a UUID, a composite key, compared as a row value), update the rows among them
that match ``where``; the checkpoint (``dbops.BackfillRun.last_key``) moves in the same
transaction. So a batch is all or nothing, a killed run resumes exactly after the last committed
batch, and no row is updated twice. No lock is held between batches.

Failure behaviour: a batch that hits a statement or lock timeout, a deadlock or a serialization
failure is retried; a batch that keeps failing, for those or any other reason (a constraint the new
values break, say), is split in half, down to one row. A single row that still fails stops the run
with status ``failed``: the checkpoint is right before that row, the error is recorded, and running
the same command again (after fixing the cause) resumes there. After any failure the run goes on
from the checkpoint the database has, not the one it last saw: a commit it saw may be lost (with
``synchronous_commit`` off in a crash, or in a failover to a replica), and then its batch is done
again.

Between batches the run obeys a person (``dbops.backfill.control``: pause, resume, cancel, read
back with each checkpoint) and the database's health (``dbops.backfill.throttle``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.models import F
from django.utils import timezone

from dbops.backfill import control, lease, record, throttle
from dbops.backfill.plan import (
    MAX_BATCH,
    MIN_BATCH,
    BackfillError,
    BackfillPlan,
    cursor,
    plan_check,
    rows_estimate,
)
from dbops.errors import QUERY_CANCELED, TRANSACTION_RETRYABLE, error_text
from dbops.models import UNFINISHED, BackfillRun, BackfillStatus
from dbops.retry import call_with_retries

# A statement timeout may pass on a second try (a lock freed, a cache warmed) as well as the rest.
BATCH_RETRYABLE = TRANSACTION_RETRYABLE | {QUERY_CANCELED}
TRIES_PER_SIZE = 3
# The rate is a moving average over about this many batches.
RATE_BATCHES = 20

Action = control.Action


class BackfillCancelled(BackfillError):
    """A person cancelled the run; it stopped after the batch in flight, keeping its checkpoint."""


@dataclass
class Progress:
    run: BackfillRun
    rate: float  # rows filled per second, lately
    fraction: float  # of the table's rows visited
    eta_s: float | None


@dataclass(frozen=True)
class Batch:
    key: list[str] | None  # the last primary key covered (its columns as text); None: no rows left
    scanned: int
    filled: int
    elapsed_ms: float
    readings: record.Readings | None = None


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


def _unfinished_or_cancelled(plan: BackfillPlan) -> BackfillRun | None:
    """The target's unfinished run (locked), else its last run when a person cancelled it."""
    runs = _runs(plan).filter(target=plan.target, database=plan.database)
    unfinished = (
        runs.select_for_update()
        .filter(status__in=UNFINISHED)
        .annotate(lease_live=lease.live())
        .first()
    )
    if unfinished is not None:
        return unfinished
    latest = runs.order_by("-pk").first()
    if latest is not None and latest.status == BackfillStatus.CANCELLED:
        return latest
    return None


def _run_acquire_locked(plan: BackfillPlan, owner: str) -> BackfillRun:
    found = _unfinished_or_cancelled(plan)
    if found is not None and found.status == BackfillStatus.CANCELLED:
        if not plan.options.restart:
            cancel = control.last_action(found, Action.CANCEL)
            by = f" by {cancel.actor} at {cancel.at:%Y-%m-%d %H:%M:%S %Z}" if cancel else ""
            why = f" ({cancel.note})" if cancel and cancel.note else ""
            raise BackfillError(
                f"Run #{found.pk} of {plan.target} was cancelled{by}{why}; it keeps its "
                f"checkpoint ({found.rows_done:,} rows done). Pass --restart to start a new run."
            )
        found = None
    if found is not None and lease.holder_alive(found.lease_owner, found.lease_live):
        raise lease.refuse_busy(plan, found.lease_owner)
    if found is not None and plan.options.restart:
        found.status = BackfillStatus.ABANDONED
        found.finished_at = timezone.now()
        found.lease_owner = ""
        found.save(
            using=plan.database,
            update_fields=["status", "finished_at", "lease_owner", "updated_at"],
        )
        found = None
    if found is None:
        run = _runs(plan).create(
            target=plan.target,
            database=plan.database,
            options=plan.recorded_options,
            rows_estimate=rows_estimate(plan),
            batch_size=plan.batch_size,
            lease_owner=owner,
        )
        _runs(plan).filter(pk=run.pk).update(lease_expires_at=lease.expires(plan))
        record.event(plan, run, _actor(owner), Action.START, "a new run")
        return run
    if found.options != plan.recorded_options:
        raise BackfillError(
            f"An unfinished run (#{found.pk}, {found.rows_done:,} rows done) of {plan.target} used "
            f"different options: {found.options}. Run it again with those options to resume, "
            "or pass --restart to abandon it and start over."
        )
    _runs(plan).filter(pk=found.pk).update(
        # A paused run stays paused: the command waits for someone to resume it.
        status=BackfillStatus.PAUSED
        if found.status == BackfillStatus.PAUSED
        else BackfillStatus.RUNNING,
        last_error="",
        batch_size=plan.batch_size,
        lease_owner=owner,
        lease_expires_at=lease.expires(plan),
        updated_at=timezone.now(),
    )
    found.refresh_from_db(using=plan.database)
    record.event(plan, found, _actor(owner), Action.START, f"resumed after key {found.last_key}")
    return found


def _actor(owner: str) -> str:
    """host:pid of a lease owner (without its token)."""
    return owner.rpartition(":")[0] or owner


def backfill(
    plan: BackfillPlan,
    *,
    progress: Callable[[Progress], None] | None = None,
    notify: Callable[[str], None] | None = None,
) -> BackfillRun:
    """Run (or resume) the backfill to the end; returns the finished run. Raises BackfillError
    (``BackfillCancelled`` when a person cancelled it).

    One run per target at a time, across processes and hosts, through a lease in the run's row
    (``dbops.backfill.lease``): no session state, so it works behind PgBouncer too. ``notify``
    gets a line for each pause and each answer to a person.
    """
    plan_check(plan)
    owner = lease.owner_new()
    try:
        run = _run_acquire(plan, owner)
        try:
            return Runner(plan, run, owner, progress, notify or (lambda line: None)).run()
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


def _batch_settings(plan: BackfillPlan) -> None:
    """The batch's timeouts and commit mode, local to its transaction, in one round trip."""
    settings = plan.batch_settings()
    calls = ", ".join("set_config(%s, %s, true)" for _ in settings)
    with connections[plan.database].cursor() as cur:
        cur.execute(f"SELECT {calls}", [x for item in settings.items() for x in item])


def _next_size(plan: BackfillPlan, size: int, elapsed_ms: float) -> int:
    """Toward the target duration, at most doubling or halving per batch."""
    if elapsed_ms <= 0:
        return size
    wanted = size * plan.options.target_batch_ms / elapsed_ms
    return int(min(MAX_BATCH, max(MIN_BATCH, size / 2, min(size * 2, wanted))))


class Runner:
    """One command working through one run: batches, and between them what people and the
    database's health ask for."""

    def __init__(self, plan, run, owner, progress, notify):
        self.plan, self.run_, self.owner = plan, run, owner
        self.progress, self.notify = progress, notify
        self.actor = _actor(owner)
        self.health = throttle.Health(plan)
        self.lease_s = lease.lease_seconds(plan)
        self.size = plan.batch_size
        self.longest = run.longest_batch_ms
        self.stale = False  # after a failure: read the checkpoint back before the next batch
        self.last_batch_at = time.monotonic()

    def run(self) -> BackfillRun:
        plan, run = self.plan, self.run_
        if run.status == BackfillStatus.PAUSED:
            self.notify(f"Run #{run.pk} is {control.describe_pause(run)}.")
            self._obey(BackfillStatus.PAUSED)
        while True:
            batch = self._next_batch()
            if batch is None:
                continue  # failed and split; go on from the database's checkpoint
            self.longest = max(self.longest, batch.elapsed_ms)
            if batch.key is None:
                break
            self._account(batch)
            status = self._throttle(batch)
            self._obey(status)
            if plan.options.sleep:
                time.sleep(plan.options.sleep)
        if not record.finish(plan, run, self.owner, self.longest):
            raise BackfillError(
                f"Run #{run.pk} of {plan.target} lost its lease before it finished."
            )
        record.reload(plan, run)
        record.event(plan, run, self.actor, Action.DONE, f"{run.rows_done:,} rows")
        return run

    # -- batches -------------------------------------------------------------------------
    def _next_batch(self) -> Batch | None:
        """The next batch, retried; on a failure that retries cannot fix, halve the size (down to
        one row, then fail the run) and return None."""
        plan, run = self.plan, self.run_
        try:
            if self.stale:
                record.reload(plan, run)
                self.stale = False
            return call_with_retries(
                lambda: self._batch(run.last_key, self.size),
                attempts=TRIES_PER_SIZE,
                retryable=BATCH_RETRYABLE,
                base_delay=0.2,
                max_delay=1.0,
                what=f"backfill {plan.target} batch after {run.last_key}",
                on_retry=self._count_retry,
            )
        except (DatabaseError, psycopg.Error) as exc:
            self.stale = True
            if self.size == MIN_BATCH:
                self._fail(exc)
            # Halve: a timeout may pass with fewer rows, and a bad row is narrowed down to one,
            # so the rows before it are filled and the checkpoint stops right before it.
            self.size = max(MIN_BATCH, self.size // 2)
            try:
                _runs(plan).filter(pk=run.pk).update(splits=F("splits") + 1)
            except DatabaseError:
                pass
            return None

    def _count_retry(self, exc, attempt):
        _runs(self.plan).filter(pk=self.run_.pk).update(retries=F("retries") + 1)

    def _batch(self, after: list[str] | None, size: int) -> Batch:
        plan, run = self.plan, self.run_
        with transaction.atomic(using=plan.database):
            _batch_settings(plan)
            with cursor(plan.database) as cur:
                started = time.perf_counter()
                cur.execute(
                    plan.update_sql(first=after is None),
                    {**plan.params, **plan.after_params(after), "limit": size},
                )
                key, scanned, filled = cur.fetchone()
                elapsed_ms = (time.perf_counter() - started) * 1000
            if key is None:
                return Batch(None, 0, 0, elapsed_ms)
            # The checkpoint commits with the batch: both happen, or neither. So does the lease's
            # renewal: a run that lost its lease rolls its batch back.
            readings = record.checkpoint(
                plan,
                run,
                self.owner,
                key=list(key),
                filled=filled,
                scanned=scanned,
                size=size,
                lease_s=self.lease_s,
            )
            if readings is None:
                raise BackfillError(
                    f"Run #{run.pk} of {plan.target} lost its lease to another run (this one was "
                    "stalled longer than the lease); it stopped without writing this batch."
                )
        return Batch(list(key), scanned, filled, elapsed_ms, readings)

    def _account(self, batch: Batch) -> None:
        """What the checkpoint just committed, kept here rather than read back (a round trip per
        batch; under a busy server round trips are what short batches pay for)."""
        run = self.run_
        run.last_key, run.batch_size = batch.key, self.size
        run.rows_done += batch.filled
        run.keys_scanned += batch.scanned
        run.batches += 1
        now = time.monotonic()
        seconds = max(now - self.last_batch_at, 1e-6)
        self.last_batch_at = now
        weight = 2 / (RATE_BATCHES + 1) if run.batches > 1 else 1.0
        run.rate += weight * (batch.filled / seconds - run.rate)
        keys_rate = batch.scanned / seconds
        left = run.rows_left
        run.eta_s = left / keys_rate if left and keys_rate > 0 else None
        self.size = _next_size(self.plan, self.size, batch.elapsed_ms)
        if self.progress is not None:
            self.progress(
                Progress(run=run, rate=run.rate, fraction=run.fraction or 0.0, eta_s=run.eta_s)
            )

    def _fail(self, exc: Exception):
        plan, run = self.plan, self.run_
        message = error_text(exc)
        where = (
            "at the first row"
            if run.last_key is None
            else f"at the row after primary key {', '.join(run.last_key)}"
        )
        record.fail(plan, run, message)
        record.event(plan, run, self.actor, Action.FAILED, message)
        raise BackfillError(
            f"The backfill stopped {where}: {message}. Run #{run.pk} keeps its checkpoint; fix the cause and run "
            "the same command again to resume."
        ) from exc

    # -- between batches -----------------------------------------------------------------
    def _poll(self, renew: bool) -> record.Readings | None:
        return record.heartbeat(
            self.plan, self.run_, self.owner, renew_s=self.lease_s if renew else None
        )

    def _throttle(self, batch: Batch) -> str:
        """Pause while the database's health asks; the run's status after it."""
        readings = batch.readings
        reasons = self.health.reasons(readings, after_batch=True)
        if not reasons:
            return readings.status
        if "lock_waiters" in reasons:
            self.size = max(MIN_BATCH, self.size // 2)
        pause = throttle.wait(self.health, reasons, poll=self._poll, began=self._pause_began)
        pauses = self.run_.pauses
        for indicator, seconds in pause.seconds.items():
            pauses[indicator]["seconds"] = pauses[indicator].get("seconds", 0.0) + seconds
        record.pauses_save(self.plan, self.run_)
        self.last_batch_at = time.monotonic()  # the rate leaves pauses out
        return pause.readings.status

    def _pause_began(self, indicator: str, reason: str) -> None:
        # Counted when it begins, so the admin shows a run that is waiting right now.
        entry = self.run_.pauses.setdefault(indicator, {"count": 0, "seconds": 0.0})
        entry["count"] = entry.get("count", 0) + 1
        entry["last"] = reason
        record.pauses_save(self.plan, self.run_)
        self.notify(f"Pausing for {indicator.replace('_', ' ')}: {reason}.")

    def _obey(self, status: str) -> None:
        """Answer a person: wait while the run is paused; stop when it is cancelled."""
        plan, run = self.plan, self.run_
        if status == BackfillStatus.PAUSED:
            at = f"after batch {run.batches:,} ({run.rows_done:,} rows done)"
            record.event(plan, run, self.actor, Action.PAUSED, at)
            self.notify(
                f"Paused {at}: {control.describe_pause(run)}. Waiting for Resume in the admin "
                f"(/admin/dbops/backfillrun/{run.pk}/change/); Ctrl-C leaves the run paused."
            )
            status = self._wait_while_paused()
            if status == BackfillStatus.RUNNING:
                record.event(plan, run, self.actor, Action.RESUMED)
                self.notify("Resumed.")
                self.last_batch_at = time.monotonic()
        if status == BackfillStatus.CANCELLED:
            record.event(plan, run, self.actor, Action.STOPPED, f"after {run.rows_done:,} rows")
            cancel = control.last_action(run, Action.CANCEL)
            by = f" by {cancel.actor}" if cancel else ""
            why = f" ({cancel.note})" if cancel and cancel.note else ""
            raise BackfillCancelled(
                f"Run #{run.pk} of {plan.target} was cancelled{by}{why}; it stopped after "
                f"{run.rows_done:,} rows and keeps its checkpoint. Pass --restart to start a new run."
            )

    def _wait_while_paused(self) -> str:
        last_renewal = time.monotonic()
        poll_s = self.health.limits.poll_s
        while True:
            renew = time.monotonic() - last_renewal >= throttle.RENEW_S
            readings = self._poll(renew)
            if readings is None:
                raise BackfillError(
                    f"Run #{self.run_.pk} lost its lease to another run while it was paused."
                )
            if renew:
                last_renewal = readings.at
            if readings.status != BackfillStatus.PAUSED:
                return readings.status
            time.sleep(poll_s)
