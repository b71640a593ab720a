"""The SQL the partitioning steps run, written from catalog facts with every identifier quoted."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dbops.partitioning.ranges import name_for

Quote = Callable[[str], str]

SYNC_TRIGGER = "dbops_sync"
SYNC_TRUNCATE_TRIGGER = "dbops_sync_truncate"


def sync_function_name(source: str, target: str) -> str:
    return name_for(f"dbops_sync_{source}_to_{target}")


def _key_match(q: Quote, key: Sequence[str], row: str) -> str:
    return " AND ".join(f"{q(column)} = {row}.{q(column)}" for column in key)


def sync_function_sql(
    q: Quote, function: str, target: str, columns: Sequence[str], key: Sequence[str]
) -> str:
    """A trigger function that keeps ``target`` (schema-qualified, quoted) equal to the table it
    fires on, row by row: an upsert for INSERT and UPDATE, a delete for DELETE, TRUNCATE for
    TRUNCATE. The upsert (not a plain INSERT or UPDATE) is what makes the history copy safe beside
    it: whichever of the two writes a row second finds the first one's row, waits for it if it
    has not committed, and then updates it (the trigger, with the newer values) or leaves it (the
    copy, whose snapshot is older)."""
    cols = ", ".join(q(c) for c in columns)
    new_values = ", ".join(f"NEW.{q(c)}" for c in columns)
    conflict = ", ".join(q(c) for c in key)
    updates = ", ".join(f"{q(c)} = EXCLUDED.{q(c)}" for c in columns if c not in key)
    on_conflict = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    key_changed = " OR ".join(f"OLD.{q(c)} IS DISTINCT FROM NEW.{q(c)}" for c in key)
    return f"""
CREATE OR REPLACE FUNCTION {q(function)}() RETURNS trigger LANGUAGE plpgsql AS $dbops$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE {target};
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND ({key_changed})) THEN
        DELETE FROM {target} WHERE {_key_match(q, key, "OLD")};
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO {target} ({cols}) VALUES ({new_values})
            ON CONFLICT ({conflict}) {on_conflict};
    END IF;
    RETURN NULL;
END
$dbops$""".strip()  # noqa: S608 (identifiers quoted)


def sync_triggers_sql(q: Quote, table: str, function: str) -> list[str]:
    return [
        f"CREATE TRIGGER {q(SYNC_TRIGGER)} AFTER INSERT OR UPDATE OR DELETE ON {q(table)}"
        f" FOR EACH ROW EXECUTE FUNCTION {q(function)}()",
        f"CREATE TRIGGER {q(SYNC_TRUNCATE_TRIGGER)} AFTER TRUNCATE ON {q(table)}"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {q(function)}()",
    ]


def sync_drop_sql(q: Quote, table: str, function: str) -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {q(SYNC_TRIGGER)} ON {q(table)}",
        f"DROP TRIGGER IF EXISTS {q(SYNC_TRUNCATE_TRIGGER)} ON {q(table)}",
        f"DROP FUNCTION IF EXISTS {q(function)}()",
    ]


def copy_batch_sql(
    q: Quote,
    source: str,
    target: str,
    pk: str,
    pk_type: str,
    columns: Sequence[str],
    key: Sequence[str],
    *,
    first: bool,
) -> str:
    """One batch of the history copy, in the shape the backfill engine runs
    (``BackfillPlan.update_sql``): the next keys after the checkpoint ``%(after_0)s`` (none for
    the first batch) up to ``%(upper)s``, their rows inserted into ``target`` unless there already
    (put there by the trigger), returning (the last key covered as a one-element text array, keys
    visited, rows inserted). Rows above ``upper`` (the largest key once the trigger existed) were
    written through the trigger.

    ``FOR KEY SHARE`` on the rows read: a DELETE of one of them waits until the batch commits, so
    the trigger's DELETE then finds the copied row (without it, a row deleted while the batch ran
    would live on in the copy). UPDATEs do not wait: the trigger's upsert does what is needed."""
    cols = ", ".join(q(c) for c in columns)
    src, pkq = q(source), q(pk)
    after = "" if first else f"{pkq} > CAST(%(after_0)s AS {pk_type}) AND "
    return f"""
WITH next_keys AS MATERIALIZED (
    SELECT {pkq} FROM {src} WHERE {after}{pkq} <= %(upper)s
     ORDER BY {pkq} LIMIT %(limit)s
), copied AS (
    INSERT INTO {q(target)} ({cols})
    SELECT {cols} FROM {src} WHERE {src}.{pkq} = ANY(ARRAY(SELECT {pkq} FROM next_keys))
       FOR KEY SHARE
    ON CONFLICT ({", ".join(q(c) for c in key)}) DO NOTHING
    RETURNING 1
)
SELECT (SELECT ARRAY[{pkq}::text] FROM next_keys ORDER BY {pkq} DESC LIMIT 1),
       (SELECT count(*) FROM next_keys), (SELECT count(*) FROM copied)""".strip()  # noqa: S608 (quoted)


def month_totals_sql(
    q: Quote, table: str, column: str, unit: str, pk: str, sums: Sequence[str]
) -> str:
    """Per interval of the partition key: rows, the sum of the primary key, the sums of ``sums``,
    and a checksum of every column (the row's text, hashed), to compare two tables."""
    extra = "".join(f", sum({q(c)})" for c in sums)
    return f"""
SELECT date_trunc('{unit}', {q(column)}, 'UTC') AS part, count(*), sum({q(pk)}){extra},
       sum(hashtextextended(t::text, 0)::numeric)
  FROM {q(table)} t GROUP BY 1 ORDER BY 1""".strip()  # noqa: S608 (quoted; unit from a fixed list)
