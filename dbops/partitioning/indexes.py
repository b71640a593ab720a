"""An index on a partitioned table, built without blocking writes.

``CREATE INDEX ... CONCURRENTLY`` is refused on a partitioned table, and a plain ``CREATE INDEX``
on one holds a SHARE lock on every partition for the whole build. So, as PostgreSQL's manual
describes: the index on the parent only (``ON ONLY``: instant, INVALID), then per partition a
concurrent build and ``ALTER INDEX ... ATTACH PARTITION``; the parent's index turns valid once
every partition has one attached. A run that stops half way resumes: partitions whose index is
attached are skipped, an INVALID leftover of a killed build is dropped and built again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dbops.partitioning import catalog
from dbops.partitioning.convert import Timeouts, short_transaction
from dbops.partitioning.ranges import PartitioningError, name_for
from dbops.timeouts import lock_timeout, statement_timeout

logger = logging.getLogger("dbops.partitioning")

# create_sql(on, name, concurrently): the CREATE INDEX statement for ``on`` (a quoted table, or
# "ONLY <quoted table>") and the index ``name``.
CreateSql = Callable[[str, str, bool], str]


def _index_state(connection, name: str) -> str | None:
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                WHERE c.relname = %s AND c.relnamespace = current_schema()::regnamespace""",
            [name],
        )
        row = cursor.fetchone()
    return None if row is None else ("valid" if row[0] else "invalid")


def _attached(connection, parent_index: str, partition: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT count(*) FROM pg_inherits h JOIN pg_index i ON i.indexrelid = h.inhrelid
                WHERE h.inhparent = %s::regclass AND i.indrelid = %s::regclass""",
            [parent_index, partition],
        )
        return cursor.fetchone()[0] > 0


def child_index_name(partition: str, name: str) -> str:
    return name_for(f"{partition}_{name}")


def _build_on(connection, partition: str, name: str, create_sql: CreateSql, timeouts: Timeouts):
    q = connection.ops.quote_name
    child = child_index_name(partition, name)
    if _index_state(connection, child) == "invalid":
        logger.warning("dropping INVALID index %s left by a build that stopped", child)
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {q(child)}")
    if _index_state(connection, child) is None:
        # A concurrent build waits for every older transaction; that wait is not a lock queue
        # anyone stands in behind it, so it gets no short lock timeout, and no statement timeout.
        with (
            lock_timeout(0, using=connection.alias),
            statement_timeout(0, using=connection.alias),
            connection.cursor() as cursor,
        ):
            cursor.execute(create_sql(q(partition), child, True))

    def attach():
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER INDEX {q(name)} ATTACH PARTITION {q(child)}")

    short_transaction(connection, attach, what=f"attaching {child}", timeouts=timeouts)


def partitioned_index_build(
    connection, table: str, name: str, create_sql: CreateSql, *, timeouts: Timeouts
) -> int:
    """Build index ``name`` on every partition of ``table``; returns the partitions built now."""
    q = connection.ops.quote_name
    if _index_state(connection, name) is None:

        def parent_only():
            with connection.cursor() as cursor:
                cursor.execute(create_sql(f"ONLY {q(table)}", name, False))

        short_transaction(
            connection, parent_only, what=f"creating {name} on {table}", timeouts=timeouts
        )
    built = 0
    for partition in catalog.partitions(connection, table):
        if partition.detach_pending or _attached(connection, name, partition.name):
            continue
        _build_on(connection, partition.name, name, create_sql, timeouts)
        built += 1
        logger.info("index %s: built and attached on %s", name, partition.name)
    if _index_state(connection, name) != "valid":
        raise PartitioningError(
            f"Index {name} on {table} is still INVALID after every partition got one: a partition "
            "was added meanwhile without it; run the migration again."
        )
    return built


def partitioned_index_drop(connection, name: str, *, timeouts: Timeouts) -> None:
    def drop():
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX IF EXISTS {connection.ops.quote_name(name)}")

    short_transaction(connection, drop, what=f"dropping {name}", timeouts=timeouts)
