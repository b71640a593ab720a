"""One ``migrate`` at a time per database: an advisory lock held on a connection of its own.

Two deploys (or two pods starting together) running ``migrate`` at once would apply the same
migration twice, or interleave a concurrent build with its own drop. The first takes the lock;
a second one stops at once naming the first (host, process, server pid, since when), or waits up
to ``DBOPS["MIGRATE_LOCK_WAIT_MS"]`` for it.

The lock is held on its own connection, so nothing the migration does (reconnecting, a killed
statement) can drop it, and it goes when that connection goes, however the process ends. On a
direct connection it is a session advisory lock. Through PgBouncer in transaction mode a session
lock would stay on a server connection other clients use, so there the connection holds a
transaction open for the whole run and the lock is transaction-scoped: PgBouncer keeps a server
connection for a client while its transaction lasts. (A server that ends idle transactions,
``idle_in_transaction_session_timeout``, would end that one too: give the migrating role none.)
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from django.db import DatabaseError, connections

from dbops.conf import dbops_settings
from dbops.errors import LOCK_NOT_AVAILABLE, sqlstate
from dbops.exceptions import MigrateAlreadyRunning
from dbops.pooling import behind_pgbouncer

# The toolkit's advisory lock key ("dbops" + "m"); advisory locks are per database.
MIGRATE_LOCK_KEY = 0x64626F70736D
APPLICATION_PREFIX = "dbops migrate"

_HOLDER_SQL = """
    SELECT a.pid, a.application_name, a.client_addr::text,
           coalesce(a.xact_start, a.backend_start), extract(epoch FROM now() - coalesce(a.xact_start, a.backend_start))::float
      FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND l.classid = %s::oid AND l.objid = %s::oid
"""


@dataclass(frozen=True)
class Holder:
    pid: int
    application: str
    client: str | None
    since: datetime
    age_s: float

    def describe(self) -> str:
        who = self.application or "a session"
        origin = f", connected from {self.client}" if self.client else ""
        return (
            f"{who} (server pid {self.pid}{origin}), since {self.since:%Y-%m-%d %H:%M:%S %Z} "
            f"({self.age_s:,.0f} s ago)"
        )


def application_name() -> str:
    """What the lock's connection calls itself: the host and process of this migrate."""
    return f"{APPLICATION_PREFIX} {socket.gethostname()} pid {os.getpid()}"[:63]


def lock_holder(cursor) -> Holder | None:
    cursor.execute(_HOLDER_SQL, [MIGRATE_LOCK_KEY >> 32, MIGRATE_LOCK_KEY & 0xFFFFFFFF])
    row = cursor.fetchone()
    return Holder(*row) if row else None


def _refusal(holder: Holder | None, waited_ms: int) -> MigrateAlreadyRunning:
    first = holder.describe() if holder else "another session (it ended just now: try again)"
    waited = f" It did not finish within {waited_ms} ms." if waited_ms else ""
    return MigrateAlreadyRunning(
        f"Another migrate is running on this database: {first}.{waited} Wait for it to finish "
        "(`manage.py showmigrations` shows what it has applied), or let a second migrate wait "
        "for the first: DBOPS['MIGRATE_LOCK_WAIT_MS'], in milliseconds. "
        "If that process is gone, so is its lock: its connection held it."
    )


def _acquire(holder_connection, pooled: bool, wait_ms: int, on_wait) -> None:
    try_lock, lock = (
        ("pg_try_advisory_xact_lock", "pg_advisory_xact_lock")
        if pooled
        else ("pg_try_advisory_lock", "pg_advisory_lock")
    )
    with holder_connection.cursor() as cursor:
        cursor.execute(
            f"SELECT set_config('application_name', %s, %s), {try_lock}(%s)",
            [application_name(), pooled, MIGRATE_LOCK_KEY],
        )
        if cursor.fetchone()[1]:
            return
        first = lock_holder(cursor)
        if not wait_ms:
            raise _refusal(first, 0)
        if on_wait is not None:
            on_wait(f"Waiting up to {wait_ms} ms for the migrate running: {first.describe()}.")
        cursor.execute(
            "SELECT set_config('lock_timeout', %s, %s), set_config('statement_timeout', '0', %s)",
            [f"{wait_ms}ms", pooled, pooled],
        )
        try:
            cursor.execute(f"SELECT {lock}(%s)", [MIGRATE_LOCK_KEY])
        except DatabaseError as exc:
            if sqlstate(exc) != LOCK_NOT_AVAILABLE:
                raise
            raise _refusal(first, wait_ms) from exc


def _release(holder_connection, pooled: bool) -> None:
    try:
        if holder_connection.is_usable():
            if pooled:
                holder_connection.rollback()
            else:
                with holder_connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATE_LOCK_KEY])
    finally:
        holder_connection.close()


@contextmanager
def migrate_lock(
    alias: str = "default",
    *,
    wait_ms: int | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold this database's migration lock for the block; ``MigrateAlreadyRunning`` (naming the
    holder) when another process holds it past ``wait_ms`` (default: the setting)."""
    wait_ms = dbops_settings.MIGRATE_LOCK_WAIT_MS if wait_ms is None else wait_ms
    pooled = behind_pgbouncer(alias)
    holder_connection = connections.create_connection(alias)
    try:
        holder_connection.ensure_connection()
        if pooled:
            holder_connection.set_autocommit(False)
        _acquire(holder_connection, pooled, int(wait_ms), on_wait)
    except BaseException:
        holder_connection.close()
        raise
    try:
        yield
    finally:
        _release(holder_connection, pooled)
