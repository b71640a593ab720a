"""What a database error is: its SQLSTATE, its constraint, and one line of text fit for a person.

Django wraps psycopg's errors (``django.db.IntegrityError`` and friends) and keeps the original as
``__cause__``; everything here looks through that wrapper, so callers never parse message text.

A lost connection is judged by type and SQLSTATE too (``connection_lost``). One case has neither:
through PgBouncer, a server connection whose backend was killed can be handed to a client just as
it sends ``BEGIN``; the client then receives the backend's FATAL error and PgBouncer's own, and
psycopg, which expects one result for ``BEGIN``, raises ``InternalError("received 2 results from
command 'BEGIN'")`` with no SQLSTATE (the results are dropped) and marks the connection broken.
Django maps it to ``django.db.InternalError``, which nothing treats as a lost connection: a 500.
What does tell is the connection itself (``connection_broken``): ``dbops.routing`` asks it when a
statement fails and raises ``ConnectionLost`` (an ``OperationalError``) in its place.
"""

from __future__ import annotations

import psycopg
from django.db import InterfaceError, OperationalError

from dbops.exceptions import DbopsError

DEADLOCK = "40P01"
SERIALIZATION_FAILURE = "40001"
LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout, or NOWAIT
QUERY_CANCELED = "57014"  # statement_timeout, or pg_cancel_backend

SQLSTATE_NAMES = {
    DEADLOCK: "deadlock detected",
    SERIALIZATION_FAILURE: "serialization failure",
    LOCK_NOT_AVAILABLE: "lock not available",
    QUERY_CANCELED: "statement timeout",
}
# Aborted by PostgreSQL for a reason that re-running the whole transaction can fix.
TRANSACTION_RETRYABLE = frozenset({DEADLOCK, SERIALIZATION_FAILURE, LOCK_NOT_AVAILABLE})
# The server ended the session: pg_terminate_backend or a fast shutdown (57P01), a crash of another
# backend (57P02), a server starting or stopping (57P03), idle_session_timeout (57P05). Class 08
# (connection exception) is a lost connection too; PgBouncer reports its own failures as 08P01.
SESSION_ENDED = frozenset({"57P01", "57P02", "57P03", "57P05"})
CONNECTION_EXCEPTION_CLASS = "08"
CLIENT_SIDE_FAILURES = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


class ConnectionLost(DbopsError, OperationalError):
    """A statement failed because its connection broke under it (see the module docstring): an
    ``OperationalError``, like every other lost connection, whatever psycopg called it."""


def _chain(exc: BaseException | None):
    while exc is not None:
        yield exc
        exc = exc.__cause__


def _causes(exc: BaseException | None):
    """The error, what it was raised from, and what it was raised while handling (Django's session
    store raises ``UpdateError`` while handling the ``DatabaseError`` that made the save fail)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error, looking through Django's wrapper to psycopg's error."""
    return next((e.sqlstate for e in _chain(exc) if getattr(e, "sqlstate", None)), None)


def constraint_name(exc: BaseException) -> str | None:
    """The constraint an IntegrityError violated, from the server's diagnostics (not the text)."""
    for error in _chain(exc):
        diag = getattr(error, "diag", None)
        if diag is not None and diag.constraint_name:
            return diag.constraint_name
    return None


def error_text(exc: BaseException) -> str:
    """The first line of an error's message (the rest is detail, hints and context), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def connection_lost(exc: BaseException) -> bool:
    """Did the connection fail, rather than the statement? SQLSTATE class 08 or a server that ended
    the session; ``ConnectionLost``; or a Django or psycopg ``OperationalError``/``InterfaceError``
    with no SQLSTATE, which psycopg raises only from the client side (connection refused, closed,
    lost). Looks through wrappers and through errors raised while handling one."""
    for error in _causes(exc):
        if isinstance(error, ConnectionLost):
            return True
        state = getattr(error, "sqlstate", None)
        if state:
            return state.startswith(CONNECTION_EXCEPTION_CLASS) or state in SESSION_ENDED
    return any(
        isinstance(error, CLIENT_SIDE_FAILURES) and sqlstate(error) is None
        for error in _causes(exc)
    )


def connection_broken(connection) -> bool:
    """Is the psycopg connection under a Django connection broken (interrupted, not closed by us)?"""
    raw = getattr(connection, "connection", None)
    return bool(raw is not None and getattr(raw, "broken", False))
