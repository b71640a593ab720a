"""Re-run a whole transaction when PostgreSQL aborts it for a reason that a retry can fix."""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import DatabaseError, transaction

logger = logging.getLogger("dbops.retry")

RETRYABLE_SQLSTATES = {
    "40P01": "deadlock detected",
    "40001": "serialization failure",
    "55P03": "lock not available",
}

P = ParamSpec("P")
R = TypeVar("R")


class RetryInsideTransaction(RuntimeError):
    """retry_transaction was called inside an outer transaction, where a retry cannot work."""


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error, looking through Django's wrapper to psycopg's error."""
    seen = exc
    while seen is not None:
        state = getattr(seen, "sqlstate", None)
        if state:
            return state
        seen = seen.__cause__
    return None


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
    ``attempts`` runs in all, sleeping a random time up to ``base_delay * 2**n`` (capped at
    ``max_delay``) between runs ("full jitter", so retrying callers spread out). Refuses to run
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
            for attempt in range(1, attempts + 1):
                try:
                    return fn(*args, **kwargs)
                except DatabaseError as exc:
                    state = sqlstate(exc)
                    if state not in RETRYABLE_SQLSTATES or attempt == attempts:
                        raise
                    delay = random.uniform(0, min(max_delay, base_delay * 2 ** (attempt - 1)))
                    logger.info(
                        "%s: %s (%s), retry %d of %d in %.0f ms",
                        fn.__qualname__,
                        RETRYABLE_SQLSTATES[state],
                        state,
                        attempt,
                        attempts - 1,
                        delay * 1000,
                        extra={"sqlstate": state, "attempt": attempt},
                    )
                    time.sleep(delay)
            raise AssertionError("unreachable")

        return wrapper

    return decorate(func) if func is not None else decorate
