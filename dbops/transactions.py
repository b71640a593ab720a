"""One decorator for the transaction of a service that writes: ``@service_transaction``.

It stacks three things every such service needs, in the one order that works::

    retry loop (dbops.retry.call_with_retries)          outermost
      transaction.atomic(using=..., durable=True)       one per attempt
        SET LOCAL lock_timeout (dbops.timeouts)          first statement of the attempt
          the service

- **The retry loop is outside the transaction.** A deadlock (40P01), a serialization failure
  (40001) or a lock timeout (55P03) aborts the whole transaction: every later statement of it
  fails ("current transaction is aborted") until it rolls back. Only a new transaction can run the
  work again, so each attempt opens its own, and the loop wraps them.
- **The transaction is durable.** A service's commit is what its caller relies on; nested in a
  caller's ``atomic()`` it would be a savepoint that the caller could still roll back, and a
  retry there cannot work (the outer transaction is aborted too). So it refuses to run inside an
  outer atomic block, before doing anything (``RetryInsideTransaction``).
- **The lock timeout is transaction-local** (``set_config('lock_timeout', ..., true)``, the same as
  ``SET LOCAL``), set before the service's first statement so every lock it waits for is covered:
  behind a stuck transaction the service gives up within the timeout and is retried, instead of
  waiting out the statement timeout; the setting ends with the transaction, so a pooled
  connection (or PgBouncer in transaction mode) goes back as it came.

When every attempt failed for one of those reasons it raises ``ServiceTransactionFailed`` from the
last database error: nothing was committed, and the same call may be made again later. Any other
error (a domain error, an ``IntegrityError``, a lost connection) is not retried and reaches the
caller as it is, after the attempt's transaction rolled back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar, overload

import psycopg
from django.db import DatabaseError, transaction

from dbops.conf import dbops_settings
from dbops.errors import SQLSTATE_NAMES, TRANSACTION_RETRYABLE, sqlstate
from dbops.exceptions import DbopsError
from dbops.retry import RetryInsideTransaction, _in_outer_transaction, call_with_retries
from dbops.timeouts import lock_timeout, transaction_timeouts

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_ATTEMPTS = 5


class ServiceTransactionFailed(DbopsError):
    """Every attempt of a service's transaction was aborted by a deadlock, a serialization failure
    or a lock timeout. Nothing was committed; the call may be made again. The last database error
    is ``__cause__``."""

    def __init__(self, function: str, *, attempts: int, error: BaseException):
        self.function = function
        self.attempts = attempts
        self.sqlstate = sqlstate(error)
        reason = SQLSTATE_NAMES.get(self.sqlstate or "", "aborted")
        super().__init__(
            f"{function} gave up after {attempts} attempt{'s' * (attempts != 1)}, the last one "
            f"aborted by {reason} ({self.sqlstate}): other transactions held what it needed. "
            "Nothing of this call was committed; it may be made again."
        )


def _positive_ms(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{name} must be a whole number of milliseconds, at least 1, not {value!r}"
        )


@overload
def service_transaction(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def service_transaction(
    *,
    using: str | None = None,
    lock_timeout_ms: int | None = None,
    statement_timeout_ms: int | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    base_delay: float = 0.01,
    max_delay: float = 0.5,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def service_transaction(
    func=None,
    /,
    *,
    using=None,
    lock_timeout_ms=None,
    statement_timeout_ms=None,
    attempts=DEFAULT_ATTEMPTS,
    base_delay=0.01,
    max_delay=0.5,
):
    """Run the decorated function in a durable transaction under a transaction-local lock
    timeout, re-running the whole transaction on deadlock, serialization failure and lock timeout.

    ``@service_transaction`` or ``@service_transaction(using=..., lock_timeout_ms=...,
    attempts=...)``. ``using``: the database alias (default ``DBOPS["PRIMARY_ALIAS"]``);
    ``lock_timeout_ms``: how long a lock may be waited for (default
    ``DBOPS["SERVICE_LOCK_TIMEOUT_MS"]``, read at each call); ``statement_timeout_ms``: also a
    transaction-local statement timeout (default: the session's); ``attempts``: runs in all,
    with jittered exponential backoff from ``base_delay`` up to ``max_delay`` seconds between them.
    Raises ``RetryInsideTransaction`` inside an outer atomic block and ``ServiceTransactionFailed``
    when the attempts run out (see the module's docstring).
    """
    if func is not None and not callable(func):
        raise TypeError(
            "service_transaction takes its options by keyword: "
            "@service_transaction(using=..., lock_timeout_ms=..., attempts=...)"
        )
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ValueError(f"attempts must be a whole number, at least 1, not {attempts!r}")
    if lock_timeout_ms is not None:
        _positive_ms("lock_timeout_ms", lock_timeout_ms)
    if statement_timeout_ms is not None:
        _positive_ms("statement_timeout_ms", statement_timeout_ms)
    options = _Options(
        using, lock_timeout_ms, statement_timeout_ms, attempts, base_delay, max_delay
    )

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return _run(fn, args, kwargs, options)

        return wrapper

    return decorate(func) if func is not None else decorate


@dataclass(frozen=True)
class _Options:
    using: str | None
    lock_timeout_ms: int | None
    statement_timeout_ms: int | None
    attempts: int
    base_delay: float
    max_delay: float


def _run(fn: Callable[..., R], args: tuple, kwargs: dict, options: _Options) -> R:
    """One call of a decorated function: refuse if nested, then the attempts."""
    name = getattr(fn, "__qualname__", repr(fn))
    alias = options.using or dbops_settings.PRIMARY_ALIAS
    if _in_outer_transaction(alias):
        raise RetryInsideTransaction(
            f"{name} runs in a durable transaction of its own and retries it whole, so it cannot "
            "run inside an outer transaction.atomic(): call it outside any atomic block (and, in "
            "a view, with ATOMIC_REQUESTS off)."
        )
    lock_ms = options.lock_timeout_ms
    if lock_ms is None:
        lock_ms = dbops_settings.SERVICE_LOCK_TIMEOUT_MS
        _positive_ms('DBOPS["SERVICE_LOCK_TIMEOUT_MS"]', lock_ms)
    statement_ms = options.statement_timeout_ms

    def attempt() -> R:
        with transaction.atomic(using=alias, durable=True):
            if statement_ms is None:
                with lock_timeout(lock_ms, using=alias):
                    return fn(*args, **kwargs)
            # Both in one round trip (a bulk write's batches set them every time).
            transaction_timeouts(lock_ms=lock_ms, statement_ms=statement_ms, using=alias)
            return fn(*args, **kwargs)

    try:
        return call_with_retries(
            attempt,
            attempts=options.attempts,
            retryable=TRANSACTION_RETRYABLE,
            base_delay=options.base_delay,
            max_delay=options.max_delay,
            what=name,
        )
    except (DatabaseError, psycopg.Error) as exc:
        # call_with_retries lets a retryable error through only after the last attempt.
        if sqlstate(exc) not in TRANSACTION_RETRYABLE:
            raise
        raise ServiceTransactionFailed(name, attempts=options.attempts, error=exc) from exc
