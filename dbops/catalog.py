"""Read-only questions to PostgreSQL's catalogs, shared by /health/ready, the checks and db_doctor."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connections
from django.db.migrations.executor import MigrationExecutor


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    superuser_reserved: int
    reserved: int  # reserved_connections, PostgreSQL 16+; 0 before


def _dicts(alias: str, columns: list[str], sql: str, params=()) -> list[dict]:
    """Rows of a catalog query as dicts keyed by ``columns``."""
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params)
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def server_version(alias: str = "default") -> str:
    with connections[alias].cursor() as cursor:
        cursor.execute("SHOW server_version")
        return cursor.fetchone()[0]


def connection_limits(alias: str = "default") -> ConnectionLimits:
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('max_connections')::int,"
            " current_setting('superuser_reserved_connections')::int,"
            " coalesce(current_setting('reserved_connections', true), '0')::int"
        )
        return ConnectionLimits(*cursor.fetchone())


def unapplied_migrations(alias: str = "default") -> list[str]:
    executor = MigrationExecutor(connections[alias])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [
        f"{migration.app_label}.{migration.name}" for migration, backwards in plan if not backwards
    ]


def invalid_indexes(alias: str = "default") -> list[dict]:
    """Indexes left INVALID, usually by a CREATE INDEX CONCURRENTLY that failed or was killed."""
    return _dicts(
        alias,
        ["index", "table"],
        """
            SELECT idx.relname, tbl.relname
              FROM pg_index i
              JOIN pg_class idx ON idx.oid = i.indexrelid
              JOIN pg_class tbl ON tbl.oid = i.indrelid
              JOIN pg_namespace n ON n.oid = idx.relnamespace
             WHERE NOT i.indisvalid AND n.nspname = ANY(current_schemas(false))
             ORDER BY 1
        """,
    )


def not_valid_constraints(alias: str = "default") -> list[dict]:
    """Constraints added NOT VALID and not yet validated: new rows are checked, old ones are not."""
    return _dicts(
        alias,
        ["constraint", "table"],
        """
            SELECT c.conname, t.relname
              FROM pg_constraint c
              JOIN pg_class t ON t.oid = c.conrelid
              JOIN pg_namespace n ON n.oid = t.relnamespace
             WHERE NOT c.convalidated AND n.nspname = ANY(current_schemas(false))
             ORDER BY 1
        """,
    )


def long_transactions(alias: str = "default", *, older_than_s: float = 60) -> list[dict]:
    """Sessions whose transaction has been open longer than ``older_than_s`` (any state)."""
    return _dicts(
        alias,
        ["pid", "user", "application", "state", "age_s", "query"],
        """
            SELECT pid, usename, application_name, state,
                   extract(epoch FROM now() - xact_start)::float AS age_s, left(query, 200)
              FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND xact_start IS NOT NULL AND now() - xact_start > make_interval(secs => %s)
             ORDER BY xact_start
            """,
        [older_than_s],
    )


def idle_in_transaction(alias: str = "default", *, older_than_s: float = 30) -> list[dict]:
    """Sessions idle inside an open transaction: holding locks and snapshots, doing nothing."""
    return _dicts(
        alias,
        ["pid", "user", "application", "idle_s", "query"],
        """
            SELECT pid, usename, application_name, extract(epoch FROM now() - state_change)::float AS idle_s, left(query, 200)
              FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND state LIKE 'idle in transaction%%' AND now() - state_change > make_interval(secs => %s)
             ORDER BY state_change
            """,
        [older_than_s],
    )


def blocked_locks(alias: str = "default") -> list[dict]:
    """Sessions waiting for a lock, with the sessions blocking them."""
    return _dicts(
        alias,
        ["pid", "waiting_s", "query", "blocked_by_pid", "blocker_state", "blocker_query"],
        """
            SELECT blocked.pid, extract(epoch FROM now() - blocked.query_start)::float AS waiting_s,
                   left(blocked.query, 200), blocker.pid, blocker.state, left(blocker.query, 200)
              FROM pg_stat_activity blocked
              JOIN LATERAL unnest(pg_blocking_pids(blocked.pid)) AS b(pid) ON true
              JOIN pg_stat_activity blocker ON blocker.pid = b.pid
             WHERE blocked.datname = current_database()
             ORDER BY blocked.query_start
            """,
    )
