"""Counting and timing every query through ``connection.execute_wrapper``.

Works with DEBUG off (it does not read the debug cursor's ``connection.queries``) and costs one
``perf_counter`` pair per query.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from django.conf import settings
from django.db import connections

logger = logging.getLogger("dbops.slow_query")


class QueryStats:
    """An execute wrapper that counts queries, adds up their time and logs the slow ones."""

    def __init__(self, slow_ms: float | None = None):
        self.count = 0
        self.total_ms = 0.0
        self.slow_ms = settings.DB_SLOW_QUERY_MS if slow_ms is None else slow_ms

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            self.count += 1
            self.total_ms += elapsed_ms
            if self.slow_ms and elapsed_ms >= self.slow_ms:
                # The SQL with placeholders, not the parameters: they may hold personal data.
                logger.warning(
                    "slow query: %.1f ms on %s: %s",
                    elapsed_ms,
                    context["connection"].alias,
                    sql,
                    extra={"duration_ms": elapsed_ms, "sql": sql},
                )


@contextmanager
def track_queries(slow_ms: float | None = None) -> Iterator[QueryStats]:
    """Count and time every query run on any database alias inside the block."""
    stats = QueryStats(slow_ms)
    with ExitStack() as stack:
        for alias in connections:
            stack.enter_context(connections[alias].execute_wrapper(stats))
        yield stats
