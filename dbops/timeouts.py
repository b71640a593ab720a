"""The one place that sets PostgreSQL's lock and statement timeouts for a block of work.

Inside a transaction the setting is transaction-local (``set_config(name, value, true)``, the same
as ``SET LOCAL``): it ends with the transaction, so a pooled connection, or a PgBouncer server
connection in transaction mode, goes back unchanged. Outside a transaction (autocommit: a
``CREATE INDEX CONCURRENTLY``, which cannot run in one) it is a session setting, restored on exit;
session settings do not survive a transaction pooler, so such work needs a direct connection.

Both work as context managers and as decorators. Inside a transaction, leaving the block does not
undo the setting: it lasts until the transaction ends (one statement, not two, on hot paths).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections

from dbops.pooling import require_direct


def _milliseconds_check(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number of milliseconds, not {value!r}")


@contextmanager
def _setting(name: str, milliseconds: int, using: str | None) -> Iterator[None]:
    _milliseconds_check(name, milliseconds)
    connection = connections[using or "default"]
    value = f"{milliseconds}ms"
    if connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config(%s, %s, true)", [name, value])
        yield
        return
    require_direct(connection.alias, f"{name} outside a transaction")
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting(%s), set_config(%s, %s, false)", [name, name, value])
        previous = cursor.fetchone()[0]
    try:
        yield
    finally:
        if connection.is_usable():
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config(%s, %s, false)", [name, previous])


def transaction_timeouts(*, lock_ms: int, statement_ms: int, using: str | None = None) -> None:
    """Both timeouts for the rest of the current transaction, in one round trip (a hot loop's
    helper: the backfill sets them in every batch)."""
    connection = connections[using or "default"]
    _milliseconds_check("lock_timeout", lock_ms)
    _milliseconds_check("statement_timeout", statement_ms)
    if not connection.in_atomic_block:
        raise RuntimeError("transaction_timeouts() needs a transaction: use it inside atomic()")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
            [f"{lock_ms}ms", f"{statement_ms}ms"],
        )


def lock_timeout(milliseconds: int, *, using: str | None = None):
    """Give up on any lock the block waits for longer than ``milliseconds`` (SQLSTATE 55P03)."""
    return _setting("lock_timeout", milliseconds, using)


def statement_timeout(milliseconds: int, *, using: str | None = None):
    """Cancel any statement of the block that runs longer than ``milliseconds`` (SQLSTATE 57014)."""
    return _setting("statement_timeout", milliseconds, using)
