"""Re-run work that PostgreSQL aborted for a reason a retry can fix: one loop for every caller.

``call_with_retries`` is the loop itself, used by services (through
``dbops.transactions.service_transaction``, which adds the durable transaction and its lock
timeout), the migration operations (lock timeouts) and the backfill (a batch);
``retry_transaction`` re-runs a function that opens its own atomic block.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Collection
from typing import ParamSpec, TypeVar

import psycopg
from django.db import DatabaseError, transaction

from dbops import metrics
from dbops.errors import SQLSTATE_NAMES, TRANSACTION_RETRYABLE, sqlstate
from dbops.exceptions import DbopsError

logger = logging.getLogger("dbops.retry")

P = ParamSpec("P")
R = TypeVar("R")


class RetryInsideTransaction(DbopsError, RuntimeError):
    """``retry_transaction`` or ``service_transaction`` was called inside an outer transaction,
    where a retry cannot work. (Also a ``RuntimeError``, what it was before the toolkit had one
    root exception, and what Django raises for a durable block nested in another.)"""


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1, 2, ...): "full jitter", a random time
    up to ``base * 2**(attempt - 1)`` capped at ``cap``, so callers that failed together spread out."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def call_with_retries(
    fn: Callable[[], R],
    *,
    attempts: int,
    retryable: Collection[str] = TRANSACTION_RETRYABLE,
    base_delay: float = 0.01,
    max_delay: float = 0.5,
    what: str = "",
    on_retry: Callable[[BaseException, int], None] | None = None,
) -> R:
    """``fn()``, run again (at most ``attempts`` runs in all) while it fails with a database error
    whose SQLSTATE is in ``retryable``; any other error, or the last one, reaches the caller."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (DatabaseError, psycopg.Error) as exc:
            state = sqlstate(exc)
            if state not in retryable or attempt == attempts:
                raise
            delay = backoff_delay(attempt, base=base_delay, cap=max_delay)
            logger.info(
                "%s: %s (%s), retry %d of %d in %.0f ms",
                what or getattr(fn, "__qualname__", "work"),
                SQLSTATE_NAMES.get(state, state),
                state,
                attempt,
                attempts - 1,
                delay * 1000,
                extra={"sqlstate": state, "attempt": attempt},
            )
            metrics.retry_observe(state)
            if on_retry is not None:
                on_retry(exc, attempt)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _in_outer_transaction(using: str | None) -> bool:
    # Like Django's durable=True check, the transaction a TestCase wraps each test in does not count.
    blocks = transaction.get_connection(using).atomic_blocks
    return any(not getattr(block, "_from_testcase", False) for block in blocks)


def retry_transaction(
    func: Callable[P, R] | None = None,
    *,
    attempts: int = 5,
    base_delay: float = 0.01,
    max_delay: float = 0.5,
    using: str | None = None,
):
    """Decorate a function that opens its own ``transaction.atomic()``; re-run it when aborted.

    Retries deadlocks (40P01), serialization failures (40001) and lock timeouts (55P03), at most
    ``attempts`` runs in all, with jittered exponential backoff (``backoff_delay``). Refuses to run
    inside an outer transaction: there the failed statement has already aborted the outer
    transaction, and re-running the inner part cannot succeed.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if _in_outer_transaction(using):
                raise RetryInsideTransaction(
                    f"{fn.__qualname__} retries whole transactions and cannot run inside an outer "
                    "transaction.atomic(): call it outside any atomic block."
                )
            return call_with_retries(
                lambda: fn(*args, **kwargs),
                attempts=attempts,
                base_delay=base_delay,
                max_delay=max_delay,
                what=fn.__qualname__,
            )

        return wrapper

    return decorate(func) if func is not None else decorate
