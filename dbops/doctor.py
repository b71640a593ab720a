"""What db_doctor examines: the readiness report plus sessions and locks that need a person."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError

from dbops import catalog
from dbops.checks import pool_sizing


@dataclass
class Finding:
    check: str
    ok: bool
    summary: str
    details: list[dict[str, Any]] = field(default_factory=list)
    action: str = ""


def examine(
    *, alias: str = "default", long_transaction_s: float = 60, idle_s: float = 30
) -> list[Finding]:
    findings: list[Finding] = []
    try:
        version = catalog.server_version(alias)
    except DatabaseError as exc:
        return [
            Finding(
                "connection",
                False,
                f"cannot reach the database: {str(exc).strip().splitlines()[0]}",
                action="check DATABASE_URL and the server",
            )
        ]
    findings.append(Finding("connection", True, f"PostgreSQL {version}"))

    pending = catalog.unapplied_migrations(alias)
    findings.append(
        Finding(
            "migrations",
            not pending,
            f"{len(pending)} unapplied" if pending else "all applied",
            [{"migration": m} for m in pending],
            "run manage.py migrate",
        )
    )
    invalid = catalog.invalid_indexes(alias)
    findings.append(
        Finding(
            "invalid indexes",
            not invalid,
            f"{len(invalid)} INVALID" if invalid else "none",
            invalid,
            "a concurrent build failed or was killed: drop the index (DROP INDEX CONCURRENTLY) and run its migration again",
        )
    )
    not_valid = catalog.not_valid_constraints(alias)
    findings.append(
        Finding(
            "NOT VALID constraints",
            not not_valid,
            f"{len(not_valid)} not validated" if not_valid else "none",
            not_valid,
            "old rows are unchecked: run the migration that validates them (ALTER TABLE ... VALIDATE CONSTRAINT)",
        )
    )
    long = catalog.long_transactions(alias, older_than_s=long_transaction_s)
    findings.append(
        Finding(
            "long transactions",
            not long,
            f"{len(long)} open longer than {long_transaction_s:g} s"
            if long
            else f"none over {long_transaction_s:g} s",
            long,
            "they hold locks and stop VACUUM: find their owner; pg_terminate_backend(pid) if they are stuck",
        )
    )
    idle = catalog.idle_in_transaction(alias, older_than_s=idle_s)
    findings.append(
        Finding(
            "idle in transaction",
            not idle,
            f"{len(idle)} idle inside a transaction over {idle_s:g} s" if idle else "none",
            idle,
            "a client opened a transaction and went away: fix the client; set idle_in_transaction_session_timeout",
        )
    )
    blocked = catalog.blocked_locks(alias)
    findings.append(
        Finding(
            "blocked locks",
            not blocked,
            f"{len(blocked)} session(s) waiting for a lock" if blocked else "none",
            blocked,
            "see blocked_by_pid: end or finish the blocking session",
        )
    )
    sizing = pool_sizing(alias)
    findings.append(
        Finding(
            "pool sizing",
            sizing.fits,
            f"{sizing.workers} workers x {sizing.per_worker} = {sizing.demand} connections; the server gives {sizing.available}",
            action="lower WEB_CONCURRENCY or DB_POOL_MAX_SIZE, or raise max_connections",
        )
    )
    return findings
