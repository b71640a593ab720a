"""Timeouts by lock level for every statement a migration runs, Django's own operations included.

``manage.py migrate`` (``dbops/management/commands/migrate.py``) installs a ``MigrationGuard`` on
its connection as an execute wrapper (``connection.execute_wrapper``), so it sees every statement
the schema editor, ``RunSQL``, ``RunPython``'s queries and the migration recorder send. The
operations of ``dbops.operations`` install the same guard when they run without that command.
Each statement gets the timeouts of its class (``dbops.lock_levels``), set explicitly, so nothing
is inherited from the application's connection settings (a ``statement_timeout`` in ``OPTIONS``):

============== ========================================= ===========================================
class          lock_timeout                              statement_timeout
============== ========================================= ===========================================
BLOCKING       ``MIGRATION_LOCK_TIMEOUT_MS``, retried    ``MIGRATION_BLOCKING_STATEMENT_TIMEOUT_MS``
NON_BLOCKING   none (0)                                  none (0)
DATA           ``MIGRATION_LOCK_TIMEOUT_MS``, retried    none (0)
============== ========================================= ===========================================

Inside a transaction that already ran a BLOCKING statement, every later statement holds that lock
too, so it gets the BLOCKING timeouts whatever its class.

Where the timeouts live: inside a transaction (an atomic migration) they are transaction-local
(``set_config(..., true)``), set again only when the class changes. A statement outside one runs in
a transaction of its own with its timeouts local to it, so no session setting is left behind and
it works through PgBouncer; only statements PostgreSQL refuses in a transaction (``CREATE INDEX
CONCURRENTLY``...) use session settings, restored after, and refuse the pooler.

What a lock timeout does: outside a transaction the statement alone is tried again (it changed
nothing), ``MIGRATION_LOCK_ATTEMPTS`` times in all with jittered backoff. Inside a transaction the
transaction is already aborted: the error goes up, ``migrate`` rolls the migration back and runs it
again from its start. After the last attempt the error names the sessions in the way
(``pg_blocking_pids``, sampled from another connection while the statement waits).
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import psycopg
from django.db import DatabaseError, connections, transaction

from dbops.blockers import Blocker, blockers_sentence, blocking_sessions
from dbops.conf import dbops_settings
from dbops.errors import LOCK_NOT_AVAILABLE, QUERY_CANCELED, sqlstate
from dbops.exceptions import MigrationLockTimeout, MigrationStatementTooLong
from dbops.lock_levels import Kind, StatementClass, classify, statement_text
from dbops.pooling import behind_pgbouncer, require_direct

logger = logging.getLogger("dbops.migrations")

ACTIVE_SQL_TRANSACTION = "25001"  # "... cannot run inside a transaction block"
GUARD_ATTRIBUTE = "_dbops_migration_guard"
_SETS_TIMEOUTS = re.compile(r"\A\s*(?:SET|RESET|DISCARD)\b|set_config", re.IGNORECASE)
SHOWN_SQL_CHARS = 100


@dataclass(frozen=True)
class Limits:
    """The numbers a guard applies: the settings, or an operation's own values."""

    lock_timeout_ms: int
    attempts: int
    retry_delay_ms: int
    blocking_statement_ms: int

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            lock_timeout_ms=dbops_settings.MIGRATION_LOCK_TIMEOUT_MS,
            attempts=dbops_settings.MIGRATION_LOCK_ATTEMPTS,
            retry_delay_ms=dbops_settings.MIGRATION_RETRY_DELAY_MS,
            blocking_statement_ms=dbops_settings.MIGRATION_BLOCKING_STATEMENT_TIMEOUT_MS,
        )

    def backoff_s(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1, 2, ...): the delay doubling from
        ``retry_delay_ms``, capped at 30 s, jittered between half and all of it. Never near zero:
        while the migration waited for its lock, writes queued behind it; they need the pause
        to drain before it queues them again."""
        base = self.retry_delay_ms / 1000
        return min(30.0, base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class Profile:
    lock_ms: int
    statement_ms: int


@dataclass
class LockWait:
    """The last statement that gave up waiting for its lock, and who was in its way."""

    what: str
    statement: str
    lock_ms: int
    blockers: list[Blocker]

    def message(self, attempts: int, *, rolled_back: bool) -> str:
        tries = "once" if attempts == 1 else f"in {attempts} attempts"
        outcome = (
            "The migration was rolled back: nothing of it is applied."
            if rolled_back
            else "The statement changed nothing."
        )
        return (
            f"{self.what}: `{self.statement}` could not get its lock within {self.lock_ms} ms "
            f"{tries}, and gave up rather than keep every query on the table waiting behind it. "
            f"{outcome} {blockers_sentence(self.blockers)}"
        )


@dataclass
class _Transaction:
    """What the guard set in the transaction whose outermost atomic block is ``outer``."""

    outer: object | None
    profile: Profile | None = None
    set_in: object | None = None  # the innermost atomic block when it was set
    pid: int | None = None
    holds_blocking: bool = False

    def has(self, profile: Profile, blocks: list) -> bool:
        return self.profile == profile and any(block is self.set_in for block in blocks)


@dataclass
class _Session:
    """Session settings the guard set on one server connection, and what to restore there."""

    raw: object  # the psycopg connection
    profile: Profile | None  # None: unknown (a SET passed by)
    pid: int
    restore: tuple[str, str]


class _Job:
    """One statement being watched."""

    def __init__(self, pid: int, lock_ms: int, what: str):
        self.pid, self.what = pid, what
        self.started = time.monotonic()
        # Sample a few times within the lock timeout; a statement without one, every second.
        self.interval = min(max(lock_ms / 4000, 0.01), 1.0) if lock_ms else 1.0
        self.next_sample = self.started + self.interval
        self.last_log = self.started
        self.blockers: list[Blocker] = []
        self.done = False


class BlockerWatch:
    """A thread, with a connection of its own opened on first need, that asks
    ``pg_blocking_pids()`` who is in the way of the statement being run, while it runs. A
    statement without a lock timeout (a concurrent build waiting for old transactions) is
    reported in the log every ``log_every_s`` seconds while it waits."""

    log_every_s = 10.0

    def __init__(self, alias: str):
        self.alias = alias
        self._cond = threading.Condition()
        self._job: _Job | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    @contextmanager
    def watching(self, pid: int, lock_ms: int, what: str) -> Iterator[_Job]:
        job = _Job(pid, lock_ms, what)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="dbops-watch")
                self._thread.start()
            self._job = job
            self._cond.notify()
        try:
            yield job
        finally:
            with self._cond:
                job.done = True
                self._job = None
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(10)

    def _next_job(self) -> _Job | None:
        """The job to sample now, waiting as long as needed; None once closing. Holds the lock."""
        while not self._closing:
            job = self._job
            if job is None or job.done:
                self._cond.wait()
                continue
            delay = job.next_sample - time.monotonic()
            if delay <= 0:
                return job
            self._cond.wait(delay)
        return None

    def _run(self) -> None:
        connection = None
        try:
            while True:
                with self._cond:
                    job = self._next_job()
                if job is None:
                    return
                if connection is None:
                    connection = connections.create_connection(self.alias)
                job.next_sample = time.monotonic() + job.interval
                try:
                    with connection.cursor() as cursor:
                        found = blocking_sessions(cursor, job.pid)
                except DatabaseError as exc:  # the watch must never break the migration
                    logger.debug("could not ask who blocks pid %s: %s", job.pid, exc)
                    continue
                if found and not job.done:
                    job.blockers = found
                    self._report(job)
        finally:
            if connection is not None:
                connection.close()

    def _report(self, job: _Job) -> None:
        now = time.monotonic()
        if now - job.last_log >= self.log_every_s:
            job.last_log = now
            logger.warning(
                "%s: waiting %.0f s so far, behind %s",
                job.what,
                now - job.started,
                "; ".join(b.describe() for b in job.blockers),
            )


def _short(sql: object) -> str:
    text = " ".join(statement_text(sql).split())
    return text if len(text) <= SHOWN_SQL_CHARS else text[: SHOWN_SQL_CHARS - 3] + "..."


class MigrationGuard:
    """The execute wrapper: timeouts by lock level, retries, and blockers named on failure."""

    def __init__(self, connection):
        self.connection = connection
        self.watch = BlockerWatch(connection.alias)
        self.last_wait: LockWait | None = None
        self.applying: str = ""  # the migration running now (set by the migrate command)
        self._limits: list[Limits] = []
        self._steps: list[str] = []
        self._transaction: _Transaction | None = None
        self._session: _Session | None = None
        self._last_job: _Job | None = None

    @property
    def limits(self) -> Limits:
        return self._limits[-1] if self._limits else Limits.from_settings()

    @contextmanager
    def step(
        self, what: str, *, lock_timeout_ms: int | None = None, attempts: int | None = None
    ) -> Iterator[MigrationGuard]:
        """Statements of the block are described as ``what`` and use these values, when given."""
        limits = self.limits
        if lock_timeout_ms is not None:
            limits = replace(limits, lock_timeout_ms=int(lock_timeout_ms))
        if attempts is not None:
            limits = replace(limits, attempts=int(attempts))
        self._limits.append(limits)
        self._steps.append(what)
        try:
            yield self
        finally:
            self._limits.pop()
            self._steps.pop()

    def what(self) -> str:
        parts = [p for p in (self.applying, self._steps[-1] if self._steps else "") if p]
        return ", ".join(parts) or "migration"

    # The wrapper ---------------------------------------------------------------------------

    def __call__(self, execute, sql, params, many, context):
        statement = classify(sql)
        if _SETS_TIMEOUTS.search(str(sql)[:300]):
            self._forget_settings()  # a SET, RESET or set_config of the migration's own
        if statement.kind is Kind.CONTROL:
            return execute(sql, params, many, context)

        def run():
            return execute(sql, params, many, context)

        if self._in_transaction():
            return self._in_open_transaction(statement, sql, run)
        if not statement.transactional:
            return self._in_session(statement, sql, run)
        if statement.kind is Kind.DATA and not behind_pgbouncer(self.connection.alias):
            return self._data_in_session(statement, sql, run)
        return self._in_own_transaction(statement, sql, run)

    def close(self) -> None:
        """Put back the session settings the guard changed; stop the watch."""
        try:
            session = self._session
            raw = self.connection.connection
            if session is not None and session.raw is raw and raw.info.transaction_status in (0, 2):
                with raw.cursor() as cursor:
                    cursor.execute(
                        "SELECT set_config('lock_timeout', %s, false),"
                        " set_config('statement_timeout', %s, false)",
                        list(session.restore),
                    )
        except (DatabaseError, psycopg.Error) as exc:  # a broken connection takes them along
            logger.debug("session settings not restored: %s", exc)
        finally:
            self._session = None
            self.watch.close()

    def _forget_settings(self) -> None:
        if self._session is not None:
            self._session.profile = None
        if self._transaction is not None:
            self._transaction.profile = self._transaction.set_in = None

    def _session_profile(self, profile: Profile) -> int:
        """Make ``profile`` the session's settings (restored by ``close``); the server pid."""
        session, raw = self._session, self.connection.connection
        if session is not None and session.raw is raw and session.profile == profile:
            return session.pid
        pid, lock_was, statement_was = self._apply(profile, local=False)
        same = session is not None and session.raw is raw
        restore = session.restore if same else (lock_was, statement_was)
        self._session = _Session(raw, profile, pid, restore)
        return pid

    def _data_in_session(self, statement: StatementClass, sql, run):
        """A read or a write outside a transaction, on a direct connection: under the session
        settings of its class, set once for all of them (a transaction each would cost three
        round trips a statement)."""
        profile = self._profile(statement, False)

        def attempt():
            return self._watched(self._session_profile(profile), profile, sql, run)

        return self._with_retries(sql, profile, attempt)

    def _in_transaction(self) -> bool:
        connection = self.connection
        if connection.in_atomic_block or not connection.get_autocommit():
            return True
        raw = connection.connection
        return raw is not None and raw.info.transaction_status != 0  # 0: IDLE

    def _profile(self, statement: StatementClass, holds_blocking: bool) -> Profile:
        limits = self.limits
        if statement.kind is Kind.BLOCKING or holds_blocking:
            return Profile(limits.lock_timeout_ms, limits.blocking_statement_ms)
        if statement.kind is Kind.DATA:
            return Profile(limits.lock_timeout_ms, 0)
        return Profile(0, 0)

    def _apply(self, profile: Profile, *, local: bool) -> tuple[int, str, str]:
        """Set both timeouts; return the server pid (through PgBouncer not the client's) and
        the values they had."""
        with self.connection.connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_backend_pid(), current_setting('lock_timeout'),"
                " current_setting('statement_timeout'), set_config('lock_timeout', %s, %s),"
                " set_config('statement_timeout', %s, %s)",
                [f"{profile.lock_ms}ms", local, f"{profile.statement_ms}ms", local],
            )
            row = cursor.fetchone()
        return row[0], row[1], row[2]

    def _current_transaction(self) -> _Transaction:
        blocks = self.connection.atomic_blocks
        outer = blocks[0] if blocks else None
        if self._transaction is None or outer is None or self._transaction.outer is not outer:
            self._transaction = _Transaction(outer)
        return self._transaction

    def _watched(self, pid: int, profile: Profile, sql, run: Callable[[], object]):
        with self.watch.watching(pid, profile.lock_ms, f"{self.what()}: `{_short(sql)}`") as job:
            self._last_job = job
            return run()

    def _in_open_transaction(self, statement: StatementClass, sql, run):
        current = self._current_transaction()
        profile = self._profile(statement, current.holds_blocking)
        blocks = self.connection.atomic_blocks
        session = self._session
        if current.has(profile, blocks):
            pass
        elif (
            current.profile is None
            and session is not None
            and session.raw is self.connection.connection
            and session.profile == profile
        ):
            current.pid = session.pid  # the session's settings are the ones wanted
        else:
            current.pid = self._apply(profile, local=True)[0]
            current.profile, current.set_in = profile, blocks[-1] if blocks else None
        try:
            result = self._watched(current.pid, profile, sql, run)
        except DatabaseError as exc:
            explained = self._explained(exc, sql, profile)
            if explained is exc:
                raise
            raise explained from exc
        if statement.kind is Kind.BLOCKING:
            current.holds_blocking = True
        return result

    def _in_own_transaction(self, statement: StatementClass, sql, run):
        profile = self._profile(statement, False)

        def attempt():
            with transaction.atomic(using=self.connection.alias):
                pid = self._apply(profile, local=True)[0]
                return self._watched(pid, profile, sql, run)

        try:
            return self._with_retries(sql, profile, attempt)
        except DatabaseError as exc:
            if sqlstate(exc) != ACTIVE_SQL_TRANSACTION:
                raise
        # A statement PostgreSQL refuses in a transaction that the classes do not know of.
        return self._in_session(StatementClass(statement.kind, transactional=False), sql, run)

    def _in_session(self, statement: StatementClass, sql, run):
        first_words = " ".join(statement_text(sql).split()[:4])
        require_direct(
            self.connection.alias,
            f"`{first_words} ...` cannot run in a transaction, so its timeouts are session "
            "settings: it",
        )
        profile = self._profile(statement, False)

        def attempt():
            pid, lock_was, statement_was = self._apply(profile, local=False)
            try:
                return self._watched(pid, profile, sql, run)
            finally:
                self._restore_session(lock_was, statement_was)

        return self._with_retries(sql, profile, attempt)

    def _restore_session(self, lock_was: str, statement_was: str) -> None:
        try:
            with self.connection.connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('lock_timeout', %s, false),"
                    " set_config('statement_timeout', %s, false)",
                    [lock_was, statement_was],
                )
        except psycopg.Error as exc:  # a broken connection takes its settings along
            logger.debug("session settings not restored: %s", exc)

    def _with_retries(self, sql, profile: Profile, attempt: Callable[[], object]):
        limits = self.limits
        for number in range(1, limits.attempts + 1):
            try:
                return attempt()
            except DatabaseError as exc:
                explained = self._explained(exc, sql, profile)
                if sqlstate(exc) != LOCK_NOT_AVAILABLE or not profile.lock_ms:
                    if explained is exc:
                        raise
                    raise explained from exc
                if number == limits.attempts:
                    raise MigrationLockTimeout(
                        self.last_wait.message(limits.attempts, rolled_back=False)
                    ) from exc
                delay = limits.backoff_s(number)
                logger.warning(
                    "%s: lock timeout (attempt %d of %d), trying again in %.1f s. %s",
                    self.last_wait.what,
                    number,
                    limits.attempts,
                    delay,
                    blockers_sentence(self.last_wait.blockers),
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _explained(self, exc: DatabaseError, sql, profile: Profile) -> BaseException:
        """A lock timeout is remembered with its blockers; a statement that held a blocking lock
        past the bound becomes an error that says so; anything else is left as it is."""
        state = sqlstate(exc)
        if state == LOCK_NOT_AVAILABLE and profile.lock_ms:
            blockers = self._last_job.blockers if self._last_job else []
            self.last_wait = LockWait(self.what(), _short(sql), profile.lock_ms, blockers)
        elif state == QUERY_CANCELED and profile.statement_ms:
            return MigrationStatementTooLong(
                f"{self.what()}: `{_short(sql)}` ran longer than {profile.statement_ms} ms while "
                "holding a lock that blocks reads or writes of its table, and was cancelled "
                "(DBOPS['MIGRATION_BLOCKING_STATEMENT_TIMEOUT_MS']). It scans or rewrites the "
                "table: use the operation that does the long part without that lock (docs: "
                "docs/dbops/operations.md), or raise the bound for this one run if the table "
                "can be locked that long."
            )
        return exc


@contextmanager
def migration_guard(connection=None) -> Iterator[MigrationGuard]:
    """The guard of ``connection`` (default: the default alias), installed for the block unless
    one is installed already (then that one, so an operation inside ``migrate`` shares it)."""
    connection = connection or connections["default"]
    guard = getattr(connection, GUARD_ATTRIBUTE, None)
    if guard is not None:
        yield guard
        return
    # Connected first: connecting appends the wrappers of connection_created receivers, which
    # would then sit after the guard, and Django's execute_wrapper() pops the last one on exit.
    connection.ensure_connection()
    guard = MigrationGuard(connection)
    setattr(connection, GUARD_ATTRIBUTE, guard)
    connection.execute_wrappers.append(guard)
    try:
        yield guard
    finally:
        connection.execute_wrappers[:] = [w for w in connection.execute_wrappers if w is not guard]
        delattr(connection, GUARD_ATTRIBUTE)
        guard.close()
