"""Prometheus metrics for ``/health/metrics`` (prometheus_client).

Two kinds of series:

- **Counted where it happens, per process**: queries and query time per database alias and kind
  (``read``: SELECT, SHOW, EXPLAIN, VALUES; ``write``: the rest), database errors by SQLSTATE
  (``55P03`` is a lock timeout), transactions re-run by ``dbops.retry`` by SQLSTATE, readiness
  checks by result, and the psycopg pool of each worker. Under gunicorn with several workers a
  scrape reaches one worker, so set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory (emptied at
  each start) before the workers start: prometheus_client then keeps each process's values in a
  file there and every scrape adds them up (a gunicorn ``child_exit`` hook calling
  ``prometheus_client.multiprocess.mark_process_dead(worker.pid)`` forgets a worker that exits).
  Without it each process answers with its own values (one worker, ``runserver``, tests).
- **Read from the database at each scrape**, the same whichever worker answers: whether the
  database answers, the replica's lag, and the latest backfill run of each target (rows done,
  progress, rate, ETA, status, pauses per health indicator).

The share of reads the replica served is a ratio of the counters, in PromQL::

    sum(rate(dbops_db_queries_total{alias="replica"}[5m]))
      / sum(rate(dbops_db_queries_total{kind="read"}[5m]))
"""

from __future__ import annotations

import os

import psycopg
from django.db import DatabaseError, connections
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dbops.conf import dbops_settings
from dbops.errors import sqlstate

# The classic text format every Prometheus reads (prometheus_client 0.22+ labels its output
# 1.0.0; for names like ours the text is the same).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
READ_PREFIXES = ("SELECT", "SHOW", "EXPLAIN", "VALUES")

QUERIES = Counter(
    "dbops_db_queries",
    "Queries run, by database alias and kind (read or write).",
    ["alias", "kind"],
)
QUERY_SECONDS = Counter(
    "dbops_db_query_seconds",
    "Time spent in queries, by database alias and kind.",
    ["alias", "kind"],
)
DB_ERRORS = Counter(
    "dbops_db_errors",
    "Database errors by SQLSTATE (55P03 lock timeout, 57014 statement timeout or cancel, 40P01 "
    "deadlock, 40001 serialization failure).",
    ["alias", "sqlstate"],
)
RETRIES = Counter(
    "dbops_retries",
    "Transactions re-run by dbops.retry, by the SQLSTATE that aborted them.",
    ["sqlstate"],
)
HEALTH_CHECKS = Counter(
    "dbops_health_checks",
    "Readiness checks answered, by endpoint and result.",
    ["endpoint", "result"],
)
POOL = Gauge(
    "dbops_pool_connections",
    "Connections of the psycopg pools (size, available, requests waiting), by alias; the sum over "
    "live worker processes.",
    ["alias", "state"],
    multiprocess_mode="livesum",
)


def enabled() -> bool:
    return dbops_settings.METRICS_ENABLED


def query_observe(alias: str, sql: object, seconds: float, error: BaseException | None) -> None:
    """One query (an execute wrapper calls this for every query of every connection)."""
    read = isinstance(sql, str) and sql.lstrip()[:8].upper().startswith(READ_PREFIXES)
    kind = "read" if read else "write"
    QUERIES.labels(alias, kind).inc()
    QUERY_SECONDS.labels(alias, kind).inc(seconds)
    if isinstance(error, DatabaseError | psycopg.Error):
        DB_ERRORS.labels(alias, sqlstate(error) or "none").inc()


def retry_observe(state: str | None) -> None:
    if enabled():
        RETRIES.labels(state or "none").inc()


def health_observe(endpoint: str, ok: bool) -> None:
    if enabled():
        HEALTH_CHECKS.labels(endpoint, "ok" if ok else "unavailable").inc()


def pools_observe() -> None:
    """This process's pools now (at the end of each request): size, available, waiting."""
    if not enabled():
        return
    for alias in connections:
        connection = connections[alias]
        # Only pools this process opened: asking for one would open it.
        if alias not in getattr(connection, "_connection_pools", {}):
            continue
        stats = connection.pool.get_stats()
        POOL.labels(alias, "size").set(stats.get("pool_size", 0))
        POOL.labels(alias, "available").set(stats.get("pool_available", 0))
        POOL.labels(alias, "waiting").set(stats.get("requests_waiting", 0))


class DatabaseCollector:
    """Series read from the database when Prometheus scrapes. A database that does not answer
    gives ``dbops_database_up 0`` and none of the rest, never an error page."""

    def collect(self):
        up = GaugeMetricFamily("dbops_database_up", "1 when the default database answers.")
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT 1")
            families = [*_replica_families(), *_backfill_families()]
        except DatabaseError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families


def _replica_families():
    from dbops import routing

    if not routing.replica_configured():
        return []
    health = routing.monitor.refresh()
    up = GaugeMetricFamily("dbops_replica_up", "1 when the replica may serve reads.")
    up.add_metric([], 1 if health.ok else 0)
    families = [up]
    if health.lag_ms is not None:
        lag = GaugeMetricFamily(
            "dbops_replica_lag_seconds", "How far the replica's replay is behind the primary."
        )
        lag.add_metric([], health.lag_ms / 1000)
        families.append(lag)
    return families


def _backfill_families():
    from dbops.backfill.throttle import INDICATORS
    from dbops.models import BackfillRun, BackfillStatus

    labels = ["target", "database", "run"]
    family = {
        "rows": GaugeMetricFamily(
            "dbops_backfill_rows_done", "Rows filled by the run.", labels=labels
        ),
        "progress": GaugeMetricFamily(
            "dbops_backfill_progress_ratio", "Share of the table's rows visited.", labels=labels
        ),
        "rate": GaugeMetricFamily(
            "dbops_backfill_rows_per_second", "Rows filled per second, lately.", labels=labels
        ),
        "eta": GaugeMetricFamily(
            "dbops_backfill_eta_seconds", "Seconds left, at the last batch.", labels=labels
        ),
        "status": GaugeMetricFamily(
            "dbops_backfill_status", "1 for the run's status.", labels=[*labels, "status"]
        ),
        "pauses": CounterMetricFamily(
            "dbops_backfill_pauses",
            "Pauses the database's health asked for, by indicator.",
            labels=[*labels, "indicator"],
        ),
        "paused": CounterMetricFamily(
            "dbops_backfill_paused_seconds",
            "Seconds paused for the database's health, by indicator.",
            labels=[*labels, "indicator"],
        ),
    }
    # The newest run of each target (DISTINCT ON).
    runs = BackfillRun.objects.using("default").order_by("database", "target", "-pk")
    for run in runs.distinct("database", "target"):
        key = [run.target, run.database, str(run.pk)]
        family["rows"].add_metric(key, run.rows_done)
        if run.fraction is not None:
            family["progress"].add_metric(key, run.fraction)
        family["rate"].add_metric(key, run.rate if run.unfinished else 0)
        if run.eta_s is not None and run.unfinished:
            family["eta"].add_metric(key, run.eta_s)
        for status in BackfillStatus.values:
            family["status"].add_metric([*key, status], 1 if run.status == status else 0)
        for indicator in INDICATORS:
            entry = run.pauses.get(indicator, {})
            family["pauses"].add_metric([*key, indicator], entry.get("count", 0))
            family["paused"].add_metric([*key, indicator], entry.get("seconds", 0.0))
    return list(family.values())


def exposition() -> bytes:
    """The text Prometheus scrapes: this process's (or every worker's) counters, then the series
    read from the database now."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        counted = CollectorRegistry()
        multiprocess.MultiProcessCollector(counted)
    else:
        counted = REGISTRY
    database = CollectorRegistry(auto_describe=False)
    database.register(DatabaseCollector())
    return generate_latest(counted) + generate_latest(database)
