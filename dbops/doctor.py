"""What db_doctor examines: the readiness report plus sessions and locks that need a person."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError

from dbops import catalog, routing
from dbops.checks import pool_sizing
from dbops.conf import dbops_settings
from dbops.errors import error_text
from dbops.health import caches_report
from dbops.partitioning.maintain import ahead_report


@dataclass
class Finding:
    check: str
    ok: bool
    summary: str
    details: list[dict[str, Any]] = field(default_factory=list)
    action: str = ""


@dataclass(frozen=True)
class ListCheck:
    """A check that passes when a catalog query returns no rows."""

    name: str
    rows: Callable[[str], list[dict[str, Any]]]
    found: Callable[[int], str]  # summary for n rows
    clear: str  # summary when there are none
    action: str


def _checks(long_transaction_s: float, idle_s: float) -> list[ListCheck]:
    return [
        ListCheck(
            "migrations",
            lambda alias: [{"migration": m} for m in catalog.unapplied_migrations(alias)],
            lambda n: f"{n} unapplied",
            "all applied",
            "run manage.py migrate",
        ),
        ListCheck(
            "invalid indexes",
            catalog.invalid_indexes,
            lambda n: f"{n} INVALID",
            "none",
            "a concurrent build failed or was killed: drop the index (DROP INDEX CONCURRENTLY) and run its migration again",
        ),
        ListCheck(
            "NOT VALID constraints",
            catalog.not_valid_constraints,
            lambda n: f"{n} not validated",
            "none",
            "old rows are unchecked: run the migration that validates them (ALTER TABLE ... VALIDATE CONSTRAINT)",
        ),
        ListCheck(
            "long transactions",
            lambda alias: catalog.long_transactions(alias, older_than_s=long_transaction_s),
            lambda n: f"{n} open longer than {long_transaction_s:g} s",
            f"none over {long_transaction_s:g} s",
            "they hold locks and stop VACUUM: find their owner; pg_terminate_backend(pid) if they are stuck",
        ),
        ListCheck(
            "idle in transaction",
            lambda alias: catalog.idle_in_transaction(alias, older_than_s=idle_s),
            lambda n: f"{n} idle inside a transaction over {idle_s:g} s",
            "none",
            "a client opened a transaction and went away: fix the client; set idle_in_transaction_session_timeout",
        ),
        ListCheck(
            "blocked locks",
            catalog.blocked_locks,
            lambda n: f"{n} session(s) waiting for a lock",
            "none",
            "see blocked_by_pid: end or finish the blocking session",
        ),
        *_later_checks(),
        ListCheck(
            "partitions ahead",
            lambda alias: [r for r in ahead_report(using=alias) if not r["ok"]],
            lambda n: (
                f"{n} table(s) with fewer than DBOPS['PARTITIONS_MIN_AHEAD'] partitions ahead"
            ),
            "enough ahead for every table in DBOPS['PARTITIONED_TABLES']",
            "an INSERT past the last partition fails: run manage.py partitions_maintain (daily, from cron)",
        ),
    ]


def _later_checks() -> list[ListCheck]:
    """What bites later, and what a half-rolled-back migration leaves."""
    s = dbops_settings
    return [
        ListCheck(
            "schema drift",
            catalog.schema_missing,
            lambda n: f"{n} table(s) or column(s) the models need are missing",
            "every table and column the models need is there",
            "a migration was rolled back (or never applied) under code that needs it: run "
            "manage.py migrate, or deploy the code that matches the schema; /health/ready fails "
            "meanwhile",
        ),
        ListCheck(
            "sequences",
            lambda alias: catalog.sequences_near_limit(alias, ratio=s.SEQUENCE_WARN_RATIO),
            lambda n: f"{n} past {s.SEQUENCE_WARN_RATIO:.0%} of their limit",
            f"none past {s.SEQUENCE_WARN_RATIO:.0%} of their limit",
            "widen the column to bigint before inserts fail (expand and contract: a new bigint "
            "column, backfill_column, a switch); a bigint sequence feeding an integer column "
            "stops at the column's limit, not its own",
        ),
        ListCheck(
            "transaction ID age",
            _xid_rows,
            lambda n: "past the warning age: see the oldest tables",
            f"every database under {s.XID_AGE_WARN:,}",
            "VACUUM (FREEZE) the oldest tables (each row's action); if autovacuum cannot catch "
            "up, look for what holds it back: long transactions, prepared transactions, old "
            "replication slots",
        ),
        ListCheck(
            "index bloat",
            lambda alias: catalog.index_bloat(
                alias, ratio=s.INDEX_BLOAT_WARN_RATIO, min_bytes=s.INDEX_BLOAT_MIN_BYTES
            ),
            lambda n: f"{n} index(es) over {s.INDEX_BLOAT_WARN_RATIO:.0%} bloat (estimated)",
            f"none over {s.INDEX_BLOAT_WARN_RATIO:.0%} (estimated)",
            "rebuild each without blocking writes: its REINDEX INDEX CONCURRENTLY (outside a "
            "transaction; about as long as building it)",
        ),
    ]


def _xid_rows(alias: str) -> list[dict[str, Any]]:
    old = catalog.transaction_id_age(alias, older_than=dbops_settings.XID_AGE_WARN)
    return [*old, *catalog.oldest_unfrozen_tables(alias)] if old else []


def _cache_finding() -> Finding:
    report = caches_report()
    if not report:
        return Finding("cache", True, "local to the process: no server to reach")
    ok = report["cache"] == "ok"
    summary = (
        f"ok: a round trip in {report['cache_latency_ms']:g} ms"
        if ok
        else f"degraded: {report['cache_reason']}"
    )
    return Finding(
        "cache",
        ok,
        summary,
        action="check the cache server and its CACHES entry; pages that read it without a fallback fail meanwhile",
    )


def _pool_finding(alias: str) -> Finding:
    sizing = pool_sizing(alias)
    return Finding(
        "pool sizing",
        sizing.fits,
        f"{sizing.workers} workers x {sizing.per_worker} = {sizing.demand} connections; the server gives {sizing.available}",
        action="lower DBOPS['WEB_CONCURRENCY'] or the pool's max_size (OPTIONS['pool']), or raise max_connections",
    )


def _replica_finding() -> Finding:
    health = routing.monitor.refresh()
    report = health.report()
    if health.ok:
        summary = f"ok: lag {report['lag_ms']:g} ms ({report['lag_bytes']:,} bytes of WAL), replayed to {report['replay_lsn']}"
    else:
        summary = f"degraded: {health.reason}; reads go to the primary"
    return Finding(
        "replica",
        health.ok,
        summary,
        action="check the standby (running? streaming? replay paused?) and its DATABASES entry",
    )


def examine(
    *, alias: str = "default", long_transaction_s: float = 60, idle_s: float = 30
) -> list[Finding]:
    try:
        version = catalog.server_version(alias)
    except DatabaseError as exc:
        return [
            Finding(
                "connection",
                False,
                f"cannot reach the database: {error_text(exc)}",
                action="check the database's DATABASES entry and the server",
            )
        ]
    findings = [Finding("connection", True, f"PostgreSQL {version}")]
    for check in _checks(long_transaction_s, idle_s):
        rows = check.rows(alias)
        summary = check.found(len(rows)) if rows else check.clear
        findings.append(Finding(check.name, not rows, summary, rows, check.action))
    findings.append(_pool_finding(alias))
    if dbops_settings.HEALTH_CHECK_CACHES:
        findings.append(_cache_finding())
    if alias == routing.primary_alias() and routing.replica_configured():
        findings.append(_replica_finding())
    return findings
