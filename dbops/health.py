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
    """(ready, report). Not ready when the database cannot be reached, or lacks a table or column
    the running code's models need (a half-rolled-back migration: every page that touches it
    would fail).

    Unapplied migrations are listed but do not make the process unready, unless
    ``DBOPS["HEALTH_FAIL_ON_PENDING_MIGRATIONS"]`` is on: between the expand and contract steps of a
    zero-downtime change they are expected, and failing readiness then would take every pod out of
    service during the very backfill meant to avoid downtime. What bites later (sequences near
    their limit, transaction ID age) is listed under ``warnings``; a cache server or a replica
    that is down makes the report ``degraded``, never unready: every instance shares them, so
    failing readiness would take the whole service out for what one dependency lacks.
    """
    report: dict[str, Any] = {"status": "ok", "database": {}}
    try:
        alias = routing.primary_alias()
        connection = connections[alias]
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        report["database"] = {
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "server_version": catalog.server_version(alias),
            "connections": connection_reuse(alias),
        }
        pending = catalog.unapplied_migrations(alias)
        report["unapplied_migrations"] = pending
        report["invalid_indexes"] = catalog.invalid_indexes(alias)
        report["not_valid_constraints"] = catalog.not_valid_constraints(alias)
        missing = catalog.schema_missing(alias)
        report["schema_missing"] = missing
        report["warnings"] = warnings()
        if dbops_settings.PARTITIONED_TABLES:
            # Reported, never fatal: a table short of partitions ahead still serves until it runs out.
            report["partitions"] = ahead_report(using=alias)
    except DatabaseError as exc:
        _discard_broken_connection(routing.primary_alias())
        # The reason is for anyone; the error text (hosts, ports, users) only for those who may
        # see details.
        return False, {
            "status": "unavailable",
            "reason": "database unreachable",
            "error": error_text(exc),
        }
    if routing.replica_configured():
        report.update(replica_report())
    if dbops_settings.HEALTH_CHECK_CACHES:
        report.update(caches_report())
    if missing:
        report["status"] = "unavailable"
        report["reason"] = (
            f"schema drift: {len(missing)} table(s) or column(s) the code needs are missing "
            "(a migration rolled back?): run manage.py migrate, or roll the code back"
        )
        return False, report
    if pending and dbops_settings.HEALTH_FAIL_ON_PENDING_MIGRATIONS:
        report["status"] = "unavailable"
        report["reason"] = f"{len(pending)} unapplied migration(s): run manage.py migrate"
        return False, report
    return True, report


def warnings(alias: str = "default") -> list[str]:
    """What bites later: a sequence near its limit, transaction IDs near wraparound."""
    found = [
        f"sequence {s['sequence']} at {s['last_value']:,} of {s['limit']:,}"
        + (f" ({s['table']}.{s['column']}, {s['column_type']})" if s["column"] else "")
        for s in catalog.sequences_near_limit(alias, ratio=dbops_settings.SEQUENCE_WARN_RATIO)
    ]
    found += [
        f"database {d['database']}: transaction ID age {d['xid_age']:,}, multixact age "
        f"{d['multixact_age']:,} (wraparound at about 2,100,000,000)"
        for d in catalog.transaction_id_age(alias, older_than=dbops_settings.XID_AGE_WARN)
    ]
    return found


# Caches that live in the process: nothing to reach.
LOCAL_CACHES = ("LocMemCache", "DummyCache", "FileBasedCache", "DatabaseCache")


def caches_report() -> dict[str, Any]:
    """``cache``: ``ok`` or ``degraded`` (with the reason) after a round trip to every cache
    server (Redis, Memcached) in ``CACHES``; nothing when every cache is local."""
    from django.core.cache import caches

    checked, failures, started = 0, [], time.perf_counter()
    for alias in caches.settings:
        cache = caches[alias]
        if type(cache).__name__ in LOCAL_CACHES:
            continue
        checked += 1
        key, token = "dbops:health:ping", str(time.time_ns())
        try:
            cache.set(key, token, 30)
            if cache.get(key) != token:
                failures.append(f"{alias}: wrote a value and read back another")
        except Exception as exc:  # noqa: BLE001 (any client's error means the same: unreachable)
            failures.append(f"{alias}: {type(exc).__name__}: {error_text(exc)}")
    if not checked:
        return {}
    report = {
        "cache": "degraded" if failures else "ok",
        "cache_latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    if failures:
        report["cache_reason"] = "; ".join(failures)
    return report


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
