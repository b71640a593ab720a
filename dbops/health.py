"""What /health/ready reports: can this process serve requests with its database right now?"""

from __future__ import annotations

import time
from typing import Any

from django.db import DatabaseError, connections

from dbops import catalog, routing
from dbops.conf import dbops_settings
from dbops.errors import error_text
from dbops.partitioning.maintain import ahead_report


def connection_reuse(alias: str = "default") -> dict[str, Any]:
    connection = connections[alias]
    if connection.pool is not None:
        stats = connection.pool.get_stats()
        return {
            "mode": "pool",
            **{
                key: stats[key]
                for key in sorted(stats)
                if key.startswith(("pool_", "requests_", "connections_"))
            },
        }
    max_age = connection.settings_dict["CONN_MAX_AGE"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, extract(epoch FROM now() - backend_start)"
            " FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        )
        pid, age = cursor.fetchone()
    return {
        "mode": "persistent" if max_age != 0 else "per-request",
        "conn_max_age": max_age,
        "health_checks": connection.settings_dict["CONN_HEALTH_CHECKS"],
        "backend_pid": pid,
        "connection_age_s": round(float(age), 3),
    }


def readiness() -> tuple[bool, dict[str, Any]]:
    """(ready, report). Not ready when the database cannot be reached.

    Unapplied migrations are listed but do not make the process unready, unless
    ``DBOPS["HEALTH_FAIL_ON_PENDING_MIGRATIONS"]`` is on: between the expand and contract steps of a
    zero-downtime change they are expected, and failing readiness then would take every pod out of
    service during the very backfill meant to avoid downtime.
    """
    report: dict[str, Any] = {"status": "ok", "database": {}}
    try:
        connection = connections["default"]
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        report["database"] = {
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "server_version": catalog.server_version(),
            "connections": connection_reuse(),
        }
        pending = catalog.unapplied_migrations()
        report["unapplied_migrations"] = pending
        report["invalid_indexes"] = catalog.invalid_indexes()
        report["not_valid_constraints"] = catalog.not_valid_constraints()
        if dbops_settings.PARTITIONED_TABLES:
            # Reported, never fatal: a table short of partitions ahead still serves until it runs out.
            report["partitions"] = ahead_report()
    except DatabaseError as exc:
        _discard_broken_connection("default")
        # The reason is for anyone; the error text (hosts, ports, users) only for those who may
        # see details.
        return False, {
            "status": "unavailable",
            "reason": "database unreachable",
            "error": error_text(exc),
        }
    if routing.replica_configured():
        report.update(replica_report())
    if pending and dbops_settings.HEALTH_FAIL_ON_PENDING_MIGRATIONS:
        report["status"] = "unavailable"
        report["reason"] = f"{len(pending)} unapplied migration(s): run manage.py migrate"
        return False, report
    return True, report


def replica_report() -> dict[str, Any]:
    """``replica``: ``ok`` or ``degraded``; the reason, lag and replay position beside it. A
    degraded replica never makes the process unready: reads go to the primary meanwhile."""
    health = routing.monitor.refresh().report()
    report = {"replica": health.pop("status")}
    report.update({f"replica_{key}": value for key, value in health.items()})
    return report


def _discard_broken_connection(alias: str) -> None:
    """Drop a dead connection now, so the next probe connects afresh instead of failing again."""
    try:
        connections[alias].close()
    except DatabaseError:
        pass
