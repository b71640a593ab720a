"""Throttle on the database's health: between batches, the run pauses while an indicator says the
database is struggling, as GitLab's batched background migrations do. Each pause is counted per
indicator, with its reason and its length, in the run's record and the command's output.

- ``replica_lag``: the read replica is further behind than ``max_replica_lag_ms`` (default: the
  router's ceiling, ``DBOPS["REPLICA_MAX_LAG_MS"]``). Every batch writes WAL the replica must
  replay; a backfill that outruns replay sends every reader to the primary. Waits while it lags.
- ``lock_waiters``: a session waited longer than ``max_lock_wait_ms`` behind the rows this
  batch had locked (``pg_blocking_pids()`` naming the batch's own backend, asked before it
  commits): the backfill is slowing the application. Pauses ``BACKFILL_LOCK_WAIT_PAUSE_S`` and
  halves the next batch (no anchor does this; GitLab's indicators are all server-wide).
- ``vacuum``: a VACUUM works on the target table (``pg_stat_progress_vacuum``): autovacuum
  (GitLab's default indicator since 18.0) or one a person started; the reason says which. The
  backfill leaves dead tuples behind every batch; letting the vacuum finish keeps the table from
  bloating and an anti-wraparound vacuum from being starved. Waits while it runs.
- ``wal_rate``: the server generated WAL faster than ``max_wal_bytes_per_s`` over the last second
  (``pg_current_wal_insert_lsn()`` deltas): the replicas and the WAL archive have to keep up.
  Waits until the rate is back under the ceiling.

The WAL position and the lock waiters come back with the checkpoint (``dbops.backfill.record``):
no extra round trip per batch. A VACUUM is asked at most once a second (the progress view costs
about a millisecond), the replica once per batch (one query on the replica).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from dbops import routing
from dbops.backfill import record
from dbops.backfill.plan import BackfillError, BackfillPlan
from dbops.backfill.record import Readings
from dbops.conf import dbops_settings
from dbops.models import BackfillStatus

INDICATORS = ("replica_lag", "lock_waiters", "vacuum", "wal_rate")
# How often a paused run renews its lease.
RENEW_S = 10.0
# WAL rate: over at least this long.
WAL_WINDOW_S = 1.0
# A VACUUM on the table: asked at most this often (a vacuum lasts seconds to hours).
VACUUM_CHECK_S = 1.0


@dataclass(frozen=True)
class Limits:
    replica_lag_ms: float
    lock_wait_ms: float  # 0: off
    lock_wait_pause_s: float
    vacuum: bool
    wal_bytes_per_s: float  # 0: off
    poll_s: float


def _or(value, default):
    return default if value is None else value


def limits(plan: BackfillPlan) -> Limits:
    options, s = plan.options, dbops_settings
    return Limits(
        replica_lag_ms=_or(options.max_replica_lag_ms, s.REPLICA_MAX_LAG_MS),
        lock_wait_ms=_or(options.max_lock_wait_ms, s.BACKFILL_MAX_LOCK_WAIT_MS),
        lock_wait_pause_s=s.BACKFILL_LOCK_WAIT_PAUSE_S,
        vacuum=_or(options.pause_on_vacuum, s.BACKFILL_PAUSE_ON_VACUUM),
        wal_bytes_per_s=_or(options.max_wal_bytes_per_s, s.BACKFILL_MAX_WAL_BYTES_PER_S),
        poll_s=s.BACKFILL_POLL_S,
    )


def threshold_ms(plan: BackfillPlan) -> float:
    return limits(plan).replica_lag_ms


def replica_lag_ms() -> float | None:
    """The replica's lag now (dbops.routing's measure); None without a usable replica; infinite
    while it is behind for a time the monitor cannot bound yet."""
    if not routing.replica_configured():
        return None
    health = routing.monitor.refresh()
    if health.lag_ms is None and health.lag_bytes:
        return math.inf
    return health.lag_ms


class Health:
    """What the database's health asks of one run: ``reasons()`` maps each indicator that wants a
    pause now to why."""

    def __init__(self, plan: BackfillPlan):
        self.plan = plan
        self.limits = limits(plan)
        self._wal: deque[tuple[float, int]] = deque()
        self._vacuum: str | None = None
        self._vacuum_checked_at: float | None = None

    def vacuum(self, now: float) -> str | None:
        """The VACUUMs working on the table, asked again once ``VACUUM_CHECK_S`` has passed."""
        if self._vacuum_checked_at is None or now - self._vacuum_checked_at >= VACUUM_CHECK_S:
            self._vacuum = record.vacuum_on_table(self.plan)
            self._vacuum_checked_at = now
        return self._vacuum

    def wal_rate(self, readings: Readings) -> float | None:
        """Bytes of WAL per second over the last ``WAL_WINDOW_S`` or more; None until known."""
        if readings.wal_bytes is None:
            return None
        self._wal.append((readings.at, readings.wal_bytes))
        while len(self._wal) > 2 and readings.at - self._wal[1][0] >= WAL_WINDOW_S:
            self._wal.popleft()
        first_at, first = self._wal[0]
        if readings.at - first_at < WAL_WINDOW_S:
            return None
        return (readings.wal_bytes - first) / (readings.at - first_at)

    def reasons(self, readings: Readings, *, after_batch: bool) -> dict[str, str]:
        found = {}
        limit = self.limits
        lag = replica_lag_ms()
        if lag is not None and lag > limit.replica_lag_ms:
            found["replica_lag"] = (
                f"the replica is {lag:.0f} ms behind (limit {limit.replica_lag_ms:g} ms)"
            )
        if (
            after_batch
            and limit.lock_wait_ms
            and readings.lock_waiters
            and readings.longest_lock_wait_ms >= limit.lock_wait_ms
        ):
            found["lock_waiters"] = (
                f"{readings.lock_waiters} session(s) waited up to "
                f"{readings.longest_lock_wait_ms:.0f} ms behind this backfill's row locks "
                f"(limit {limit.lock_wait_ms:g} ms)"
            )
        if limit.vacuum and (vacuum := self.vacuum(readings.at)):
            found["vacuum"] = f"{vacuum} works on {self.plan.table}"
        rate = self.wal_rate(readings)
        if limit.wal_bytes_per_s and rate is not None and rate > limit.wal_bytes_per_s:
            found["wal_rate"] = (
                f"WAL written at {rate / 2**20:.1f} MiB/s "
                f"(limit {limit.wal_bytes_per_s / 2**20:g} MiB/s)"
            )
        return found


@dataclass
class Pause:
    """What one pause of the run was for and how long each indicator held it."""

    seconds: dict[str, float]
    readings: Readings


def wait(
    health: Health,
    reasons: dict[str, str],
    *,
    poll: Callable[[bool], Readings | None],
    began: Callable[[str, str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> Pause:
    """Wait while any indicator asks for a pause (``began(indicator, reason)`` as each one starts
    asking). ``poll(renew)`` reads the run's status and the health again, renewing the lease when
    ``renew``. Stops early when the run's status is no longer running: a person paused or
    cancelled it, and the engine answers that."""
    limit = health.limits
    now = last = last_renewal = time.monotonic()
    hold_until = (
        {"lock_waiters": now + limit.lock_wait_pause_s} if "lock_waiters" in reasons else {}
    )
    for indicator, reason in reasons.items():
        began(indicator, reason)
    active, seconds = dict(reasons), dict.fromkeys(reasons, 0.0)
    readings = Readings(status=BackfillStatus.RUNNING)
    while active:
        sleep(limit.poll_s)
        renew = time.monotonic() - last_renewal >= RENEW_S
        readings = poll(renew)
        if readings is None:
            raise BackfillError(
                "This run lost its lease to another run while it was paused; it stopped."
            )
        if renew:
            last_renewal = readings.at
        for indicator in active:
            seconds[indicator] = seconds.get(indicator, 0.0) + readings.at - last
        last = readings.at
        if readings.status != BackfillStatus.RUNNING:
            break
        current = health.reasons(readings, after_batch=False)
        current.update({k: reasons[k] for k, until in hold_until.items() if readings.at < until})
        for indicator in current.keys() - active.keys():
            began(indicator, current[indicator])
        active = current
    return Pause(seconds={k: v for k, v in seconds.items() if v}, readings=readings)
