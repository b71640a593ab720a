"""What PostgreSQL's catalogs say about a table, for the partitioning steps (read-only).

Every function takes a Django connection and names tables in the current schema, unquoted, as
Django's ``db_table`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Index:
    name: str
    columns: tuple[str, ...]  # plain column names; empty for an expression index
    unique: bool
    primary: bool
    tail: str  # the definition after "ON <table> ": "USING btree (...) [INCLUDE ...] [WHERE ...]"


@dataclass(frozen=True)
class Partition:
    name: str
    start: datetime | None  # None: MINVALUE or a DEFAULT partition
    end: datetime | None  # None: MAXVALUE or a DEFAULT partition
    detach_pending: bool  # a DETACH ... CONCURRENTLY that did not finish


def _rows(connection, sql: str, params=()) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _value(connection, sql: str, params=()):
    rows = _rows(connection, sql, params)
    return rows[0][0] if rows else None


_RELATION = """
    SELECT c.oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relname = %s AND n.nspname = current_schema()
"""


def relkind(connection, table: str) -> str | None:
    """'r' (a table), 'p' (a partitioned table), another kind, or None when there is none."""
    rows = _rows(connection, _RELATION, [table])
    return rows[0][1] if rows else None


def schema(connection) -> str:
    return _value(connection, "SELECT current_schema()")


def columns(connection, table: str) -> list[str]:
    """The table's columns in order (dropped ones left out)."""
    return [
        name
        for (name,) in _rows(
            connection,
            """SELECT attname FROM pg_attribute
                WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum""",
            [table],
        )
    ]


def column_not_null(connection, table: str, column: str) -> bool | None:
    return _value(
        connection,
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s"
        " AND NOT attisdropped",
        [table, column],
    )


def indexes(connection, table: str) -> list[Index]:
    """The table's indexes, each with its definition after the table's name."""
    rows = _rows(
        connection,
        """
        SELECT idx.relname, i.indisunique, i.indisprimary, pg_get_indexdef(i.indexrelid),
               format('ON %%s%%I.%%I ', CASE WHEN tbl.relkind = 'p' THEN 'ONLY ' ELSE '' END,
                      n.nspname, tbl.relname),
               ARRAY(SELECT a.attname FROM unnest((i.indkey::int2[])[0:i.indnkeyatts - 1])
                            WITH ORDINALITY k(attnum, ord)
                      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                     ORDER BY k.ord),
               i.indexprs IS NOT NULL
          FROM pg_index i
          JOIN pg_class idx ON idx.oid = i.indexrelid
          JOIN pg_class tbl ON tbl.oid = i.indrelid
          JOIN pg_namespace n ON n.oid = tbl.relnamespace
         WHERE i.indrelid = %s::regclass
         ORDER BY idx.relname
        """,
        [table],
    )
    found = []
    for name, unique, primary, definition, on_table, cols, expressions in rows:
        tail = definition.partition(on_table)[2]
        if not tail.startswith("USING "):
            raise ValueError(f"unexpected definition of index {name}: {definition}")
        found.append(Index(name, () if expressions else tuple(cols), unique, primary, tail))
    return found


def foreign_keys(connection, table: str) -> list[tuple[str, str]]:
    """(name, definition) of every foreign key from the table."""
    return _rows(
        connection,
        """SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
            WHERE conrelid = %s::regclass AND contype = 'f' AND conparentid = 0 ORDER BY conname""",
        [table],
    )


def referenced_by(connection, table: str) -> list[tuple[str, str]]:
    """(constraint, table) of every foreign key that points at the table."""
    return _rows(
        connection,
        """SELECT conname, conrelid::regclass::text FROM pg_constraint
            WHERE confrelid = %s::regclass AND contype = 'f' AND conparentid = 0 ORDER BY 1""",
        [table],
    )


def primary_key(connection, table: str) -> tuple[str, tuple[str, ...]] | None:
    """(index name, columns) of the table's primary key, or None."""
    for index in indexes(connection, table):
        if index.primary:
            return index.name, index.columns
    return None


def sequence_of(connection, table: str, column: str) -> tuple[str | None, bool]:
    """(the sequence that fills the column, whether it is an identity), or (None, False)."""
    rows = _rows(
        connection,
        """SELECT pg_get_serial_sequence(quote_ident(%s), %s), a.attidentity <> ''
             FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attname = %s""",
        [table, column, table, column],
    )
    if not rows or rows[0][0] is None:
        return None, False
    qualified, identity = rows[0]
    return qualified.rpartition(".")[2].strip('"'), identity


def partitions(connection, table: str) -> list[Partition]:
    """The partitions of a range-partitioned table, oldest first (DEFAULT and open ends last)."""
    rows = _rows(
        connection,
        r"""
        SELECT c.relname, b.bounds[1]::timestamptz, b.bounds[2]::timestamptz, i.inhdetachpending
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
          CROSS JOIN LATERAL (SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid),
                              'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)') AS bounds) b
         WHERE i.inhparent = %s::regclass
         ORDER BY 2 NULLS LAST, 1
        """,
        [table],
    )
    return [Partition(*row) for row in rows]


def trigger_exists(connection, table: str, name: str) -> bool:
    return bool(
        _value(
            connection,
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname = %s",
            [table, name],
        )
    )


def constraint_exists(connection, table: str, name: str) -> bool:
    return bool(
        _value(
            connection,
            "SELECT count(*) FROM pg_constraint WHERE conrelid = %s::regclass AND conname = %s",
            [table, name],
        )
    )
