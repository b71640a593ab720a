"""Throttle on the replica's health: pause between batches while it lags, as GitLab's batched
migrations do. Every batch writes WAL the replica must replay; a backfill that outruns replay
makes the router send every reader to the primary (past ``DBOPS["REPLICA_MAX_LAG_MS"]``), exactly when
the primary is busiest. So after each batch, while the replica lags more than
``max_replica_lag_ms`` (default: the router's ceiling), the run waits, renewing its lease, and
counts the pause. Without a replica, nothing to wait for.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from dbops import routing
from dbops.backfill.plan import BackfillPlan
from dbops.conf import dbops_settings

# How often a paused run asks again.
POLL_S = 0.1
# How often a paused run renews its lease.
RENEW_S = 10.0


def threshold_ms(plan: BackfillPlan) -> float:
    configured = plan.options.max_replica_lag_ms
    return dbops_settings.REPLICA_MAX_LAG_MS if configured is None else configured


def replica_lag_ms() -> float | None:
    """The replica's lag now (dbops.routing's measure); None without a usable replica; infinite
    while it is behind for a time the monitor cannot bound yet."""
    if not routing.replica_configured():
        return None
    health = routing.monitor.refresh()
    if health.lag_ms is None and health.lag_bytes:
        return math.inf
    return health.lag_ms


def wait_for_replica(
    plan: BackfillPlan,
    *,
    renew: Callable[[], None],
    paused: Callable[[float], None] = lambda lag_ms: None,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Block while the replica lags past the threshold (``paused(lag)`` once, when the pause
    begins); return the seconds waited (0: no pause)."""
    limit = threshold_ms(plan)
    started = last_renewal = time.monotonic()
    waiting = False
    while (lag := replica_lag_ms()) is not None and lag > limit:
        if not waiting:
            waiting = True
            paused(lag)
        sleep(POLL_S)
        if time.monotonic() - last_renewal >= RENEW_S:
            renew()
            last_renewal = time.monotonic()
    return time.monotonic() - started if waiting else 0.0
