"""What a database error is: its SQLSTATE, its constraint, and one line of text fit for a person.

Django wraps psycopg's errors (``django.db.IntegrityError`` and friends) and keeps the original as
``__cause__``; everything here looks through that wrapper, so callers never parse message text.
"""

from __future__ import annotations

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


def _chain(exc: BaseException | None):
    while exc is not None:
        yield exc
        exc = exc.__cause__


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
