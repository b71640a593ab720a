"""Steps 5 and 6 of a conversion (``dbops.partitioning.convert``): swap the table with its
partitioned copy, and later drop the old table kept for the way back.

The swap holds ACCESS EXCLUSIVE locks on both tables, so everything it can work out beforehand
(names, statements) is worked out before it takes them; under the locks it runs one check and one
``DO`` block, and commits: a few milliseconds of blocked reads and writes, whatever the size.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from dbops.partitioning import catalog, sql
from dbops.partitioning.convert import (
    COPY_SUFFIX,
    OLD_SUFFIX,
    Conversion,
    Timeouts,
    fetch_one,
    literal,
    run_sql,
    short_transaction,
    state,
    verified,
)
from dbops.partitioning.ranges import PartitioningError, name_for

logger = logging.getLogger("dbops.partitioning")


@dataclass(frozen=True)
class SwapPlan:
    live: str  # the table's name: the live table now, the spare once swapped
    spare: str
    live_becomes: str
    pk: str
    statements: tuple[str, ...]


def _renames(connection, live: str, spare: str, live_suffix: str, spare_suffix: str) -> list[str]:
    """The live table's indexes take ``live_suffix``; the spare's (``<name><spare_suffix>``) take
    the plain names."""
    q = connection.ops.quote_name
    live_names = [i.name for i in catalog.indexes(connection, live)]
    spare_names = [i.name for i in catalog.indexes(connection, spare)]
    bases = {name_for(b, spare_suffix): b for b in live_names}
    for name in spare_names:
        if name.endswith(spare_suffix):
            bases.setdefault(name, name[: -len(spare_suffix)])
    statements = [f"ALTER INDEX {q(n)} RENAME TO {q(name_for(n, live_suffix))}" for n in live_names]
    statements += [f"ALTER INDEX {q(n)} RENAME TO {q(bases[n])}" for n in spare_names if n in bases]
    return statements


def _sequence_handover(connection, live: str, spare: str, pk: str, live_suffix: str) -> list[str]:
    """The spare's sequence continues where the live one is and, for an identity, takes its name;
    a serial column's one sequence goes with the column."""
    q = connection.ops.quote_name
    live_seq, identity = catalog.sequence_of(connection, live, pk)
    if live_seq is None:
        return []
    if not identity:
        return [f"ALTER SEQUENCE {q(live_seq)} OWNED BY {q(spare)}.{q(pk)}"]
    spare_seq, _ = catalog.sequence_of(connection, spare, pk)
    return [
        f"PERFORM setval({literal(q(spare_seq))}::regclass, s.last_value, s.is_called)"
        f" FROM {q(live_seq)} s",
        f"ALTER SEQUENCE {q(live_seq)} RENAME TO {q(name_for(live_seq, live_suffix))}",
        f"ALTER SEQUENCE {q(spare_seq)} RENAME TO {q(live_seq)}",
    ]


def swap_plan(connection, conv: Conversion, *, backward: bool) -> SwapPlan:
    """Every statement of the swap, from the catalog as it is before the locks."""
    q = connection.ops.quote_name
    live = conv.table
    spare, live_becomes = (conv.old, conv.copy) if backward else (conv.copy, conv.old)
    live_suffix, spare_suffix = (COPY_SUFFIX, OLD_SUFFIX) if backward else (OLD_SUFFIX, COPY_SUFFIX)
    pk_columns = catalog.primary_key(connection, live)[1]
    pk = pk_columns[0]
    # The trigger turned around: on the spare (named `live` by then), writing the live table
    # (named `live_becomes`), keyed on its primary key.
    function = sql.sync_function_name(live, live_becomes)
    target = f"{q(catalog.schema(connection))}.{q(live_becomes)}"
    statements = [
        *sql.sync_drop_sql(q, live, sql.sync_function_name(live, spare)),
        *_sequence_handover(connection, live, spare, pk, live_suffix),
        *_renames(connection, live, spare, live_suffix, spare_suffix),
        f"ALTER TABLE {q(live)} RENAME TO {q(live_becomes)}",
        f"ALTER TABLE {q(spare)} RENAME TO {q(live)}",
        sql.sync_function_sql(q, function, target, catalog.columns(connection, live), pk_columns),
        *sql.sync_triggers_sql(q, live, function),
    ]
    return SwapPlan(live, spare, live_becomes, pk, tuple(statements))


def _do_block(statements) -> str:
    body = ";\n".join(statements)
    return f"DO $dbops_swap$ BEGIN\n{body};\nEND $dbops_swap$"


def _swap_locked(connection, conv: Conversion, plan: SwapPlan, wanted: str) -> float | None:
    """Under the locks: check, swap in one round trip; the time the locks were taken, or None."""
    q = connection.ops.quote_name
    # The live table first, as every writer takes it (its trigger then writes the spare).
    run_sql(connection, f"LOCK TABLE {q(plan.live)}, {q(plan.spare)} IN ACCESS EXCLUSIVE MODE")
    locked = time.perf_counter()
    if state(connection, conv) != wanted:
        return None
    pk = q(plan.pk)
    tops = fetch_one(
        connection,
        f"SELECT (SELECT max({pk}) FROM {q(plan.live)}), (SELECT max({pk}) FROM {q(plan.spare)})",  # noqa: S608 (quoted)
    )
    if tops[0] != tops[1]:
        raise PartitioningError(
            f"{plan.spare} is not complete (its last {plan.pk} is {tops[1]}, {plan.live}'s is "
            f"{tops[0]}): run the history copy and verify before the swap."
        )
    run_sql(connection, _do_block(plan.statements))
    return locked


def swap(
    connection, conv: Conversion, *, timeouts: Timeouts, backward: bool = False
) -> float | None:
    """Step 5 (or, backward, its reverse): the milliseconds the tables were locked (to the
    commit), or None when there was nothing to do."""
    wanted, done = ("swapped", "copying") if backward else ("copying", "swapped")

    def work() -> float | None:
        if state(connection, conv) != wanted:
            return None
        return _swap_locked(
            connection, conv, swap_plan(connection, conv, backward=backward), wanted
        )

    current = state(connection, conv)
    if current == done or (current == "done" and not backward):
        return None
    if current != wanted:
        raise PartitioningError(f"{conv.table} is in state {current!r}: nothing to swap.")
    if not backward and not verified(connection, conv):
        raise PartitioningError(
            f"{conv.copy} has not been verified against {conv.table}: run the verification "
            "(VerifyPartitionedCopy) before the swap."
        )
    direction = "back" if backward else "in"
    locked = short_transaction(
        connection, work, what=f"swapping {conv.table} {direction}", timeouts=timeouts
    )
    if locked is None:
        return None
    held_ms = (time.perf_counter() - locked) * 1000
    logger.warning(
        "swapped %s %s: tables locked for %.1f ms",
        conv.table,
        direction,
        held_ms,
        extra={"locked_ms": held_ms},
    )
    return held_ms


def kept_drop(connection, conv: Conversion, *, timeouts: Timeouts) -> bool:
    """Step 6: drop the old table kept for the way back; False if it is gone already.

    Dropping a foreign key takes ACCESS EXCLUSIVE on the table it references (its triggers live
    there): each goes in a transaction of its own, under the lock timeout, so each blocks one
    referenced table for a moment, never two at once. The table itself goes last."""
    q = connection.ops.quote_name
    current = state(connection, conv)
    if current == "done":
        return False
    if current != "swapped":
        raise PartitioningError(
            f"{conv.table} is not the partitioned table yet (state {current!r}): the old "
            "table is the live one and cannot be dropped."
        )

    def step(statements: list[str], what: str) -> None:
        def work():
            if state(connection, conv) == "swapped":
                run_sql(connection, statements)

        short_transaction(connection, work, what=what, timeouts=timeouts)

    function = sql.sync_function_name(conv.table, conv.old)
    step(sql.sync_drop_sql(q, conv.table, function), f"the trigger on {conv.table}")
    for name, _ in catalog.foreign_keys(connection, conv.old):
        step(
            [f"ALTER TABLE {q(conv.old)} DROP CONSTRAINT IF EXISTS {q(name)}"],
            f"dropping {conv.old}.{name}",
        )
    step([f"DROP TABLE {q(conv.old)}"], f"dropping {conv.old}")
    return True
