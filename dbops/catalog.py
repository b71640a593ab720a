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


def sequences_near_limit(alias: str = "default", *, ratio: float = 0.75) -> list[dict]:
    """Sequences past ``ratio`` of their limit: their own maximum, or that of the integer column
    they feed (serial, identity, or a column default calling nextval), whichever is smaller. An
    int4 column fed by a bigint sequence runs out at 2,147,483,647 whatever the sequence allows."""
    return _dicts(
        alias,
        ["sequence", "table", "column", "column_type", "sequence_type", "last_value", "limit"],
        """
            WITH fed AS (
                -- Owned: serial (deptype 'a') and identity ('i') columns.
                SELECT d.objid AS seq, d.refobjid AS tbl, d.refobjsubid AS attnum
                  FROM pg_depend d
                 WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                   AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
                UNION
                -- Named in a column default: nextval('seq').
                SELECT d.refobjid, ad.adrelid, ad.adnum
                  FROM pg_depend d JOIN pg_attrdef ad ON ad.oid = d.objid
                 WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_class'::regclass
            ), usage AS (
                SELECT quote_ident(s.schemaname) || '.' || quote_ident(s.sequencename) AS sequence,
                       t.relname AS table, a.attname AS column,
                       format_type(a.atttypid, a.atttypmod) AS column_type,
                       s.data_type::text AS sequence_type, s.last_value,
                       -- The sequence stops at its maximum, or the column's type at its own.
                       least(s.max_value, CASE a.atttypid WHEN 'int2'::regtype THEN 32767
                                                          WHEN 'int4'::regtype THEN 2147483647
                                                          ELSE s.max_value END) AS limit_value
                  FROM pg_sequences s
                  JOIN pg_namespace n ON n.nspname = s.schemaname
                  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.sequencename
                  LEFT JOIN fed ON fed.seq = c.oid
                  LEFT JOIN pg_class t ON t.oid = fed.tbl
                  LEFT JOIN pg_attribute a ON a.attrelid = fed.tbl AND a.attnum = fed.attnum
                 WHERE s.schemaname = ANY(current_schemas(false)) AND s.increment_by > 0
                   AND s.last_value IS NOT NULL
            )
            SELECT sequence, "table", "column", column_type, sequence_type, last_value, limit_value
              FROM usage WHERE last_value >= limit_value * %s
             ORDER BY last_value::numeric / limit_value DESC
        """,
        [ratio],
    )


def transaction_id_age(alias: str = "default", *, older_than: int) -> list[dict]:
    """Databases whose oldest unfrozen transaction ID is older than ``older_than`` (wraparound
    stops every write at about 2.1 billion), with the multixact age beside it."""
    return _dicts(
        alias,
        ["database", "xid_age", "multixact_age"],
        """
            SELECT datname, age(datfrozenxid), mxid_age(datminmxid)
              FROM pg_database
             WHERE datallowconn AND (age(datfrozenxid) > %s OR mxid_age(datminmxid) > %s)
             ORDER BY age(datfrozenxid) DESC
        """,
        [older_than, older_than],
    )


def oldest_unfrozen_tables(alias: str = "default", *, limit: int = 5) -> list[dict]:
    """The tables of this database that hold its transaction ID age back: vacuum these first."""
    return _dicts(
        alias,
        ["table", "xid_age", "action"],
        """
            SELECT n.nspname || '.' || c.relname, age(c.relfrozenxid),
                   format('VACUUM (FREEZE, VERBOSE) %%I.%%I;', n.nspname, c.relname)
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'm', 't') AND c.relfrozenxid <> '0'::xid
             ORDER BY age(c.relfrozenxid) DESC LIMIT %s
        """,
        [limit],
    )


def index_bloat(alias: str = "default", *, ratio: float = 0.5, min_bytes: int = 0) -> list[dict]:
    """B-tree indexes whose size passes ``min_bytes`` and whose estimated bloat passes ``ratio``,
    with the statement that rebuilds each without blocking writes.

    An estimate from the statistics, in the manner of the widely used bloat queries: the leaf
    pages the index would need for its rows (per row: the 8-byte index tuple header and the
    columns' average widths from pg_stats, aligned to 8 bytes, plus a 4-byte line pointer; pages
    of block size less their headers, filled to the index's fillfactor) against the pages it has.
    Indexes on expressions, and tables never analyzed, have no estimate and are left out.
    """
    return _dicts(
        alias,
        ["index", "table", "size_bytes", "estimated_bloat", "action"],
        """
            WITH idx AS (
                SELECT n.nspname AS schema, i.relname AS index, t.relname AS tbl, x.indexrelid,
                       x.indrelid, x.indkey::int2[] AS keys, i.reltuples, i.relpages,
                       coalesce((SELECT substring(o FROM 'fillfactor=([0-9]+)')::int
                                   FROM unnest(i.reloptions) o WHERE o LIKE 'fillfactor=%%'), 90)
                           AS fillfactor
                  FROM pg_index x
                  JOIN pg_class i ON i.oid = x.indexrelid
                  JOIN pg_class t ON t.oid = x.indrelid
                  JOIN pg_namespace n ON n.oid = i.relnamespace
                  JOIN pg_am am ON am.oid = i.relam
                 WHERE am.amname = 'btree' AND x.indisvalid AND i.reltuples >= 0
                   AND i.relpages > 1 AND NOT (0 = ANY(x.indkey::int2[]))
                   AND n.nspname = ANY(current_schemas(false))
            ), widths AS (
                SELECT idx.indexrelid, sum(s.avg_width) AS width, count(s.avg_width) AS known,
                       count(*) AS columns
                  FROM idx
                  JOIN pg_attribute a ON a.attrelid = idx.indrelid AND a.attnum = ANY(idx.keys)
                  LEFT JOIN pg_stats s ON s.schemaname = idx.schema AND s.tablename = idx.tbl
                                      AND s.attname = a.attname
                 GROUP BY idx.indexrelid
            ), estimate AS (
                SELECT idx.*, ceil(idx.reltuples * (ceil((8 + w.width) / 8.0) * 8 + 4)
                                   / ((current_setting('block_size')::int - 24 - 16)
                                      * idx.fillfactor / 100.0)) + 1 AS pages_needed
                  FROM idx JOIN widths w ON w.indexrelid = idx.indexrelid AND w.known = w.columns
            )
            SELECT quote_ident(schema) || '.' || quote_ident(index), tbl,
                   relpages::bigint * current_setting('block_size')::int,
                   round((1 - pages_needed / relpages)::numeric, 2)::float,
                   format('REINDEX INDEX CONCURRENTLY %%I.%%I;', schema, index)
              FROM estimate
             WHERE relpages::bigint * current_setting('block_size')::int >= %s
               AND 1 - pages_needed / relpages >= %s
             ORDER BY relpages - pages_needed DESC
        """,
        [min_bytes, ratio],
    )


def schema_missing(alias: str = "default") -> list[dict]:
    """Tables and columns the installed apps' managed models need and the database lacks: what a
    half-rolled-back migration leaves (the code reads a column that is gone, and every page that
    touches it fails)."""
    from django.apps import apps
    from django.db import router

    needed: dict[str, set[str]] = {}
    for model in apps.get_models(include_auto_created=True):
        meta = model._meta
        if not meta.managed or meta.proxy or meta.swapped:
            continue
        if not router.allow_migrate_model(alias, model):
            continue
        columns = needed.setdefault(meta.db_table, set())
        columns.update(f.column for f in meta.local_concrete_fields if f.column)
    with connections[alias].cursor() as cursor:
        cursor.execute(
            """
                SELECT c.relname, array_agg(a.attname::text)
                  FROM pg_class c
                  JOIN pg_namespace n ON n.oid = c.relnamespace
                  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                 WHERE c.relname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
                   AND n.nspname = ANY(current_schemas(false))
                 GROUP BY c.relname
            """,
            [sorted(needed)],
        )
        present = {table: set(columns) for table, columns in cursor.fetchall()}
    missing = []
    for table in sorted(needed):
        if table not in present:
            missing.append({"table": table, "column": None})
            continue
        missing += [{"table": table, "column": c} for c in sorted(needed[table] - present[table])]
    return missing
