"""Reads to a streaming replica, writes and transactions to the primary, and read-your-writes.

Active only when ``DATABASES`` has the replica alias (``DBOPS["REPLICA_ALIAS"]``, default
``replica``). The rules:

- Only the reads of a web request (``ReplicaRoutingMiddleware``) may go to the replica. Management
  commands, migrations, scripts and shells have no request and read from the primary.
- Writes, and every read inside a transaction (``atomic``, ``select_for_update``, the services),
  go to the primary. So does every read of a request after it wrote anything.
- Read-your-writes, the way GitLab's load balancer does it: after a request that wrote, the
  primary's WAL insert position (``pg_current_wal_insert_lsn()``) is kept in the user's session.
  That user's reads go to the replica only once ``pg_last_wal_replay_lsn()`` there has reached it;
  until then they go to the primary. Users who wrote nothing read from the replica at once.
- Read-your-writes when the position cannot be read (the query failed: a killed backend, a
  failover): the session keeps "primary until" the lag ceiling (plus one health interval) from
  now instead. Past that, a replica fit to serve reads has replayed the write, since its lag is
  under the ceiling (next point), so the user is never sent to a replica that lacks their write.
- Lag ceiling (``DBOPS["REPLICA_MAX_LAG_MS"]``): past it, every read goes to the primary. The lag
  is an upper bound (``ReplicaMonitor``, whose docstring reasons it out), so that the ceiling holds
  from a worker's first look at the standby, not only after it has watched it for a while.
- A replica that is down, refuses connections, is killed mid-request or cancels a query for a
  recovery conflict: reads go to the primary, and the replica is tried again after a back-off
  that doubles from 1 s up to 30 s. The connection is checked when the router picks the replica
  (Django's health check, run here): a reconnect that fails there sends the read to the primary,
  where the same failure inside Django's ``cursor()`` would have been an error page. A request
  that failed on the replica anyway runs again on the primary when that is safe (``dbops.rerun``).

The apps in ``DBOPS["PRIMARY_ONLY_APPS"]`` (sessions, migrations; this project adds its login
throttle's records) are always read from the primary: the session holds the
WAL position that read-your-writes needs, and a login must see its own session at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, connections

from dbops import rerun
from dbops.conf import dbops_settings
from dbops.errors import (
    ConnectionLost,
    connection_broken,
    connection_lost,
    error_text,
    sqlstate,
)

logger = logging.getLogger("dbops")

# On a standby these can only be recovery conflicts (serialization failure, deadlock with the
# startup process, database dropped) or the server going away.
REPLICA_FAILURE_STATES = frozenset({"40001", "40P01", "57P04", "57P01", "57P02", "57P03"})
# Statements that only read (anything else on the primary counts as a write).
READ_ONLY_PREFIXES = ("SELECT", "SHOW", "EXPLAIN", "VALUES")

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTH_INTERVAL_S = 0.5

# Wall-clock time for the "primary until" mark, which other workers (other machines) read.
wall_clock: Callable[[], float] = time.time


def primary_alias() -> str:
    """The alias writes, transactions and migrations use (``DBOPS["PRIMARY_ALIAS"]``)."""
    return dbops_settings.PRIMARY_ALIAS


def replica_alias() -> str:
    """The read replica's alias (``DBOPS["REPLICA_ALIAS"]``); routing is on when it is configured."""
    return dbops_settings.REPLICA_ALIAS


def replica_configured() -> bool:
    return replica_alias() in connections.settings


def lsn_int(lsn: str) -> int:
    """'16/B374D848' as a number of bytes."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) | int(low, 16)


@dataclass(frozen=True)
class ReplicaHealth:
    ok: bool
    reason: str = ""
    lag_ms: float | None = None
    lag_bytes: int | None = None
    replay_lsn: str | None = None

    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = {"status": "ok" if self.ok else "degraded"}
        if self.reason:
            report["reason"] = self.reason
        if self.lag_ms is not None:
            report["lag_ms"] = round(self.lag_ms, 1)
            report["lag_bytes"] = self.lag_bytes
        if self.replay_lsn is not None:
            report["replay_lsn"] = self.replay_lsn
        return report


class ReplicaMonitor:
    """One per process: is the replica fit to serve reads, and how far behind is it.

    Checked at most every ``HEALTH_INTERVAL_S`` by whichever request needs an answer (two tiny
    queries: the primary's clock and flushed WAL position; the replica's replayed position and the
    commit time of the last transaction it replayed).

    Lag is the age of the oldest WAL the primary has flushed and the replica has not replayed. The
    monitor cannot see that age; it keeps an upper bound of it, so that the ceiling is a promise:

    - replayed everything the primary has flushed: lag 0, however long the primary has been idle;
    - otherwise the oldest WAL not replayed was flushed *after* two moments the monitor knows, and
      the lag is at most the time since the later of them:
      (a) ``pg_last_xact_replay_timestamp()``, the commit time of the last replayed transaction:
      replay is in WAL order, and every record after that commit record was written after it;
      (b) the last look at which the primary's flushed position was one the replica has replayed
      since: what was flushed by then is replayed, so the rest was flushed later.
    - neither known (no transaction replayed since the standby started, and no such look): the lag
      is unknown, and the replica is not used until one of them is.

    Both moments come from the primary's clock (``clock_timestamp()`` there, and the commit times
    it wrote), so no clock of this machine enters the measure. An earlier version timed the lag
    from the monitor's first sight of each position: a lower bound, which read a standby 3 s behind
    as 0 s behind on a worker's first look, or after an idle spell. The price of the bound: after an
    idle primary writes again, a replica not yet at the new position reads as far behind until the
    next look (half a second later) sees it caught up.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock  # schedules the looks and the back-off; the lag uses the primary's clock
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, int]] = deque(maxlen=100_000)
        self._replayed_look_at: float | None = None
        self.health = ReplicaHealth(ok=True, reason="not checked yet")
        self.checked_at: float | None = None
        self.failures = 0
        self.down_until = 0.0

    @property
    def max_lag_ms(self) -> float:
        return dbops_settings.REPLICA_MAX_LAG_MS

    def usable(self) -> bool:
        """May reads go to the replica now? Refreshes the health when it is due."""
        if self.clock() < self.down_until:
            return False
        if self.checked_at is None or self.clock() - self.checked_at >= HEALTH_INTERVAL_S:
            self.refresh()
        return self.health.ok

    def refresh(self) -> ReplicaHealth:
        # One refresh at a time; the others keep the last answer. Never on an event loop: these
        # are synchronous queries.
        if _in_event_loop() or not self._lock.acquire(blocking=False):
            return self.health
        try:
            now = self.clock()
            if now < self.down_until:
                return self.health
            self.checked_at = now
            self.health = self._measure()
            return self.health
        finally:
            self._lock.release()

    def _measure(self) -> ReplicaHealth:
        try:
            primary_lsn, primary_now = _row(
                primary_alias(),
                "SELECT pg_current_wal_flush_lsn()::text, extract(epoch FROM clock_timestamp())::float8",
            )
        except DatabaseError:
            # The primary's trouble is not the replica's: readiness reports it on its own.
            return self.health
        try:
            in_recovery, replay, replayed_commit_at = _row(
                replica_alias(),
                "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,"
                " extract(epoch FROM pg_last_xact_replay_timestamp())::float8",
            )
        except DatabaseError as exc:
            return self.mark_down(f"unreachable: {error_text(exc)}")
        if not in_recovery or replay is None:
            return self.mark_down("not a standby: the server is not in recovery (promoted?)")
        self.failures = 0
        primary, replayed = lsn_int(primary_lsn), lsn_int(replay)
        lag_s = self._lag_bound(primary_now, primary, replayed, replayed_commit_at)
        behind = max(0, primary - replayed)
        if lag_s is None:
            return ReplicaHealth(
                ok=False,
                reason=f"{behind} bytes of WAL behind the primary, for an unknown time (no "
                "transaction replayed yet): not used until it catches up",
                lag_bytes=behind,
                replay_lsn=replay,
            )
        lag_ms = lag_s * 1000
        if lag_ms > self.max_lag_ms:
            reason = f"lagging {lag_ms:.0f} ms behind the primary (ceiling {self.max_lag_ms:g} ms)"
            return ReplicaHealth(
                ok=False, reason=reason, lag_ms=lag_ms, lag_bytes=behind, replay_lsn=replay
            )
        return ReplicaHealth(ok=True, lag_ms=lag_ms, lag_bytes=behind, replay_lsn=replay)

    def _lag_bound(
        self, now: float, primary: int, replayed: int, replayed_commit_at: float | None
    ) -> float | None:
        """Seconds, at most, since the primary flushed the oldest WAL the replica has not replayed
        (see the class docstring); None when nothing bounds it yet."""
        if self._samples and self._samples[-1][1] == primary:
            self._samples[-1] = (now, primary)  # the latest look at this position is the tighter
        elif not self._samples or primary > self._samples[-1][1]:
            self._samples.append((now, primary))
        while self._samples and self._samples[0][1] <= replayed:
            self._replayed_look_at = self._samples.popleft()[0]
        if replayed >= primary:
            return 0.0
        known = [t for t in (self._replayed_look_at, replayed_commit_at) if t is not None]
        return max(0.0, now - max(known)) if known else None

    def mark_down(self, reason: str) -> ReplicaHealth:
        """Reads leave the replica for a back-off that doubles with each failure in a row."""
        self.failures += 1
        backoff = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (self.failures - 1))
        self.down_until = self.clock() + backoff
        self.checked_at = None
        self.health = ReplicaHealth(ok=False, reason=f"{reason}; retried in {backoff:g} s")
        logger.warning("replica: %s", self.health.reason)
        _close_quietly(replica_alias())
        return self.health

    def reset(self) -> None:
        """Forget everything (tests, and after the replica was rebuilt)."""
        self._samples.clear()
        self._replayed_look_at = None
        self.health = ReplicaHealth(ok=True, reason="not checked yet")
        self.checked_at = None
        self.failures = 0
        self.down_until = 0.0


monitor = ReplicaMonitor()


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _row(alias: str, sql: str, params=()) -> tuple:
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def _one(alias: str, sql: str, params=()) -> Any:
    return _row(alias, sql, params)[0]


def _close_quietly(alias: str) -> None:
    try:
        connections[alias].close()
    except DatabaseError:
        pass


def is_replica_failure(exc: BaseException) -> bool:
    """A connection lost or refused, or a query cancelled by recovery on the standby."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DatabaseError) and sqlstate(exc) in REPLICA_FAILURE_STATES


@dataclass
class RequestRouting:
    """What the router knows about the request in progress (a context variable, so the async
    ORM's worker threads see the same object)."""

    request: Any = None
    pinned_reason: str = ""  # non-empty: every read of this request goes to the primary
    wrote: bool = False  # routed or sent a write: the rest of the request reads from the primary
    sent_write: bool = False  # sent a statement that may write: the request must not run again
    session_checked: bool = False
    replica_reads: int = 0
    replica_error: BaseException | None = None
    lost_alias: str | None = None  # a connection that broke under one of this request's statements
    view_started: bool = False
    view_rerun: bool | None = None  # the view's own word (``dbops.rerun``), if it gave one
    reruns: int = 0
    notes: list[str] = field(default_factory=list)

    def pin(self, reason: str) -> None:
        if not self.pinned_reason:
            self.pinned_reason = reason


_current: ContextVar[RequestRouting | None] = ContextVar("dbops_routing", default=None)


def current() -> RequestRouting | None:
    return _current.get()


def _session_caught_up(state: RequestRouting) -> bool:
    """Has the replica replayed this user's last writes? Forgets each mark once it has."""
    session = getattr(state.request, "session", None)
    if session is None:
        return True
    until = session.get(dbops_settings.SESSION_PRIMARY_UNTIL_KEY)
    if until is not None:
        if wall_clock() < until:
            return False
        session.pop(dbops_settings.SESSION_PRIMARY_UNTIL_KEY, None)
    lsn = session.get(dbops_settings.SESSION_LSN_KEY)
    if not lsn:
        return True
    try:
        caught_up = _one(replica_alias(), "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn])
    except DatabaseError as exc:
        monitor.mark_down(f"unreachable: {error_text(exc)}")
        return False
    if caught_up:
        session.pop(dbops_settings.SESSION_LSN_KEY, None)
    return bool(caught_up)


def _replica_connected() -> bool:
    """Connect to the replica, or check the connection kept from an earlier request, now.

    Django checks a persistent connection (``CONN_HEALTH_CHECKS``) and reconnects inside
    ``cursor()``, after the router has chosen: a standby that went away then fails the query
    where nothing can send it to the primary. Run here, the same check and reconnect fail while
    the primary can still be chosen, and the later ``cursor()`` skips its check (done once per
    request)."""
    replica = connections[replica_alias()]
    try:
        replica.close_if_health_check_failed()
        replica.ensure_connection()
    except DatabaseError as exc:
        monitor.mark_down(f"unreachable: {error_text(exc)}")
        return False
    return True


def replica_allowed(state: RequestRouting | None) -> bool:
    if state is None or state.pinned_reason or state.wrote:
        return False
    if _in_event_loop():
        # Asked on the event loop itself (the async ORM asks in its worker thread): no
        # synchronous check can run here, and the primary is always right.
        return False
    if connections[primary_alias()].in_atomic_block:
        return False
    if not monitor.usable():
        return False
    if not _replica_connected():
        state.pin("replica unreachable")
        return False
    if not state.session_checked:
        state.session_checked = True
        if not _session_caught_up(state):
            state.pin("read-your-writes: the replica has not replayed this user's last write")
            return False
    return not state.pinned_reason


class ReplicaRouter:
    """``DATABASE_ROUTERS`` entry; routes nothing unless a ``replica`` alias is configured."""

    def db_for_read(self, model, **hints):
        if not replica_configured():
            return None
        if model._meta.app_label in dbops_settings.PRIMARY_ONLY_APPS:
            return primary_alias()
        state = current()
        if replica_allowed(state):
            state.replica_reads += 1
            return replica_alias()
        return primary_alias()

    def db_for_write(self, model, **hints):
        if not replica_configured():
            return None
        state = current()
        if state is not None:
            state.wrote = True
        return primary_alias()

    def allow_relation(self, obj1, obj2, **hints):
        if not replica_configured():
            return None
        return {obj1._state.db, obj2._state.db} <= {primary_alias(), replica_alias(), None}

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if not replica_configured():
            return None
        return db == primary_alias()


def _as_connection_failure(exc: DatabaseError, connection) -> DatabaseError:
    """``ConnectionLost`` in place of an error psycopg raised while its connection broke, whatever
    it called it (``dbops.errors``); any other error as it is."""
    if isinstance(exc, OperationalError | InterfaceError) or not connection_broken(connection):
        return exc
    lost = ConnectionLost(f"the connection broke during the statement: {error_text(exc)}")
    lost.__cause__ = exc
    return lost


def observe(execute, sql, params, many, context):
    """Execute wrapper on every connection: raises ``ConnectionLost`` for a statement whose
    connection broke, and notes a request's writes (raw SQL included, which no router sees),
    the replica's failures and the connections lost under it."""
    state = _current.get()
    connection = context["connection"]
    alias = connection.alias
    if state is not None and alias != replica_alias() and not state.sent_write:
        if not sql.lstrip().upper().startswith(READ_ONLY_PREFIXES):
            state.wrote = state.sent_write = True
    try:
        return execute(sql, params, many, context)
    except DatabaseError as exc:
        failure = _as_connection_failure(exc, connection)
        if state is not None:
            _note_failure(state, alias, failure)
        if failure is exc:
            raise
        raise failure from exc


def _note_failure(state: RequestRouting, alias: str, exc: BaseException) -> None:
    if alias == replica_alias():
        if is_replica_failure(exc):
            state.replica_error = exc
    elif connection_lost(exc) and state.lost_alias is None:
        state.lost_alias = alias


def observe_connection(connection, **kwargs) -> None:
    """Put ``observe`` on this connection object, once (a ``connection_created`` receiver too)."""
    if observe not in connection.execute_wrappers:
        connection.execute_wrappers.append(observe)


def write_position() -> str | None:
    """The primary's WAL insert position now: what a reader of this user's writes must wait for.
    None when it cannot be read; the connection is closed then, since a broken one would fail the
    session's save too, and with it the mark that replaces the position."""
    try:
        return _one(primary_alias(), "SELECT pg_current_wal_insert_lsn()::text")
    except DatabaseError as exc:
        logger.warning("read-your-writes: the WAL position is unknown (%s)", error_text(exc))
        if not connections[primary_alias()].in_atomic_block:
            _close_quietly(primary_alias())
        return None


def request_begin(request) -> tuple[RequestRouting, Any]:
    for alias in connections:
        observe_connection(connections[alias])
    state = RequestRouting(request=request)
    return state, _current.set(state)


def request_end(token) -> None:
    _current.reset(token)


def view_starts(state: RequestRouting | None, view_func) -> None:
    """The view is about to run: from now on, running the request again runs the view again."""
    if state is not None:
        state.view_started = True
        state.view_rerun = rerun.view_policy(view_func)


def remember_writes(state: RequestRouting) -> None:
    """After a request that wrote: keep the primary's WAL position in the user's session, or, when
    it cannot be read, keep the user's reads on the primary until the lag ceiling has passed."""
    session = getattr(state.request, "session", None)
    if not state.wrote or session is None or not replica_configured():
        return
    lsn = write_position()
    if lsn is not None:
        session[dbops_settings.SESSION_LSN_KEY] = lsn
        return
    # Past the ceiling, a replica fit to serve reads has replayed this write; one health interval
    # more, since a worker may act on a look taken that long ago.
    until = wall_clock() + dbops_settings.REPLICA_MAX_LAG_MS / 1000 + HEALTH_INTERVAL_S
    session[dbops_settings.SESSION_PRIMARY_UNTIL_KEY] = max(
        until, session.get(dbops_settings.SESSION_PRIMARY_UNTIL_KEY) or 0
    )


def rerun_needed(state: RequestRouting, status_code: int) -> bool:
    """Did the request fail because of its connection (the replica failed, or a connection broke
    under a statement) before it sent anything that may write? Then running it again may succeed."""
    return (
        status_code >= 500
        and not state.sent_write
        and not state.reruns
        and (state.replica_error is not None or state.lost_alias is not None)
    )


def rerun_planned(state: RequestRouting | None, status_code: int = 503) -> bool:
    """Will the request run again (needed, and safe to repeat)?"""
    if state is None or not rerun_needed(state, status_code):
        return False
    method = getattr(state.request, "method", "GET")
    return rerun.allowed(method, view_started=state.view_started, view_rerun=state.view_rerun)


def recover(state: RequestRouting) -> str:
    """After a failure that ``rerun_needed`` saw: leave the replica alone for its back-off, close
    the broken connection, and ready the state for a second run; returns what failed."""
    failed = []
    if state.replica_error is not None:
        failed.append(f"the replica failed mid-request: {error_text(state.replica_error)}")
        monitor.mark_down(f"failed mid-request: {error_text(state.replica_error)}")
        state.pin("the replica failed during this request")
    if state.lost_alias is not None:
        failed.append(f"the connection to {state.lost_alias!r} broke")
        _close_quietly(state.lost_alias)
    state.replica_error = state.lost_alias = None
    state.view_started, state.view_rerun = False, None
    state.reruns += 1
    return "; ".join(failed)
