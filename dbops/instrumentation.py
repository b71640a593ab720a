"""Counting and timing every query through an execute wrapper.

Works with DEBUG off (it does not read the debug cursor's ``connection.queries``) and costs one
``perf_counter`` pair per query.

Which queries belong to the block is a property of the *context*, not of a connection object:
Django keeps one connection object per thread, and the async ORM runs each query in a worker
thread (``sync_to_async``), which inherits the caller's context but not its connection. So one
wrapper sits on every connection object (``instrument``, also run for each new connection through
the ``connection_created`` signal) and charges each query to the trackers active in the context
that ran it: an async view's queries are counted wherever they run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial

from django.db import connections

from dbops import metrics
from dbops.conf import dbops_settings

logger = logging.getLogger("dbops.slow_query")


class QueryStats:
    """An execute wrapper that counts queries, adds up their time and logs the slow ones."""

    def __init__(self, slow_ms: float | None = None):
        self.count = 0
        self.total_ms = 0.0
        # Per database alias: {alias: [count, ms]}, for pages that read from a replica too.
        self.by_alias: dict[str, list] = {}
        self.slow_ms = dbops_settings.SLOW_QUERY_MS if slow_ms is None else slow_ms

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            self.count += 1
            self.total_ms += elapsed_ms
            alias = self.by_alias.setdefault(context["connection"].alias, [0, 0.0])
            alias[0] += 1
            alias[1] += elapsed_ms
            if self.slow_ms and elapsed_ms >= self.slow_ms:
                # The SQL with placeholders, not the parameters: they may hold personal data.
                logger.warning(
                    "slow query: %.1f ms on %s: %s",
                    elapsed_ms,
                    context["connection"].alias,
                    sql,
                    extra={"duration_ms": elapsed_ms, "sql": sql},
                )


# The trackers of the blocks this context is in, innermost last.
_active: ContextVar[tuple[QueryStats, ...]] = ContextVar("dbops_query_stats", default=())


def _charge_active_trackers(execute, sql, params, many, context):
    call = execute
    for stats in _active.get():
        call = partial(stats, call)
    if not metrics.enabled():
        return call(sql, params, many, context)
    # Every query of the process, inside a tracked block or not, for /health/metrics.
    started, error = time.perf_counter(), None
    try:
        return call(sql, params, many, context)
    except Exception as exc:
        error = exc
        raise
    finally:
        metrics.query_observe(
            context["connection"].alias, sql, time.perf_counter() - started, error
        )


def instrument(connection, **kwargs) -> None:
    """Put the counting wrapper on this connection object, once (a ``connection_created``
    receiver too). First in line: a ``connection.execute_wrapper()`` block that is open meanwhile
    takes its own wrapper off the end of the list when it exits."""
    if _charge_active_trackers not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, _charge_active_trackers)


@contextmanager
def track_queries(slow_ms: float | None = None) -> Iterator[QueryStats]:
    """Count and time every query run inside the block, on any database alias, in this thread
    or in a worker thread that inherits this context (``sync_to_async``, the async ORM)."""
    stats = QueryStats(slow_ms)
    for alias in connections:
        instrument(connections[alias])
    token = _active.set((*_active.get(), stats))
    try:
        yield stats
    finally:
        _active.reset(token)
