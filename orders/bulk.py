"""Bulk writes of products: the statements the CSV import runs per batch, and the price raise.

Why not ``bulk_create(update_conflicts=True, unique_fields=["sku"], update_fields=[...])``: Django
writes ``ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, ...`` and nothing else. It cannot say
``version = version + 1`` (every update field is set to the new row's value), nor ``WHERE`` the
values differ, so every row of the file is rewritten on every run: a new row version, WAL and
index entries for each, ``version`` never advancing, and the optimistic lock of a person editing
the product in the admin silently overridden. Reading the rows first to compute versions in Python
opens a race with every concurrent edit. So the import runs one statement that PostgreSQL applies
row by row under the row lock (``upsert_sql``), built from the model's metadata with quoted
identifiers; values are always parameters. ``bench/bulk.py`` compares it with ``bulk_create``.

The price raise (``product_prices_raise``) is one ``UPDATE`` per keyset batch that computes the new
price from the row's current price in SQL, where Django's ``bulk_update`` writes prices computed
in Python from an earlier read (``CASE WHEN id = 1 THEN 10.30 ...``) and loses a concurrent edit.
A raise is not idempotent, so its checkpoint is a row (``PriceRaiseRun``) that each batch moves in
its own transaction: a client that lost the answer to a commit resumes from what committed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

import psycopg
from django.db import DatabaseError, connections

from core.money import CENT, MONEY_MAX
from dbops.errors import error_text
from dbops.transactions import ServiceTransactionFailed, service_transaction
from orders.exceptions import InvalidChange, PriceRaiseRunFinished, PriceRaiseStopped
from orders.models import PriceRaiseRun, Product
from orders.selectors import catalog_invalidate

# The fields a file may set, in the order of every statement's columns; ``description`` only when
# the file has that column (otherwise an existing product's description is left alone).
IMPORT_FIELDS = ("sku", "name", "price", "stock")
OPTIONAL_FIELDS = ("description",)
# A batch that takes longer than this is cancelled (and retried, then reported): no statement of a
# bulk write may hold its row locks for long, with or without the session's own timeout (there is
# none behind PgBouncer).
BATCH_STATEMENT_TIMEOUT_MS = 30_000
BATCH_ATTEMPTS = 5
TEMP_TABLE = "product_import_rows"


def _q(connection, name: str) -> str:
    return connection.ops.quote_name(name)


def _columns(connection, fields: Sequence[str]) -> list[str]:
    return [_q(connection, Product._meta.get_field(name).column) for name in fields]


def _types(connection, fields: Sequence[str]) -> list[str]:
    return [Product._meta.get_field(name).db_type(connection) for name in fields]


def unnest_source(connection, fields: Sequence[str]) -> str:
    """``unnest(%s::varchar(40)[], ...) AS i(sku, ...)``: a batch as one array parameter per
    column, so the statement text is the same for 1 row or 10,000 (and under the 65,535
    parameters a VALUES list of that many rows would need)."""
    arrays = ", ".join(f"%s::{kind}[]" for kind in _types(connection, fields))
    return f"unnest({arrays}) AS i({', '.join(_columns(connection, fields))})"


def temp_table_source(connection) -> str:
    return f"pg_temp.{_q(connection, TEMP_TABLE)} AS i"


def upsert_sql(connection, fields: Sequence[str], source: str) -> str:
    """``INSERT ... SELECT ... ON CONFLICT (sku) DO UPDATE ... WHERE`` the values differ.

    A changed row gets the file's values, ``version + 1`` and ``updated_at = now()``; an unchanged
    row is not written at all: ``NOT EXISTS`` leaves it out before any lock is taken (no new row
    version, no WAL: its ``xmin`` stays), and the ``DO UPDATE ... WHERE`` keeps it unwritten if it
    was inserted or changed concurrently in between. Rows go in SKU order, so two imports lock
    the same products in the same order. ``RETURNING xmax = 0`` is true for an inserted row.
    """
    table = _q(connection, Product._meta.db_table)
    cols = _columns(connection, fields)
    sku, values = cols[0], cols[1:]

    def row(alias: str) -> str:
        return "(" + ", ".join(f"{alias}.{c}" for c in values) + ")"

    version, updated_at = _columns(connection, ("version", "updated_at"))
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in values)
    stored, excluded = row("p"), row("EXCLUDED")
    return (
        f"INSERT INTO {table} AS p ({', '.join(cols)}, {version}) "  # noqa: S608 (quoted)
        f"SELECT {', '.join(f'i.{c}' for c in cols)}, 1 FROM {source} "
        f"WHERE NOT EXISTS (SELECT 1 FROM {table} cur WHERE cur.{sku} = i.{sku} "
        f"AND {row('cur')} IS NOT DISTINCT FROM {row('i')}) "
        f"ORDER BY i.{sku} "
        f"ON CONFLICT ({sku}) DO UPDATE SET {sets}, "
        f"{version} = p.{version} + 1, {updated_at} = now() "
        f"WHERE {stored} IS DISTINCT FROM {excluded} "
        "RETURNING (p.xmax = 0)"
    )


def classify_sql(connection, fields: Sequence[str]) -> str:
    """How many rows of a batch are new and how many would change (``--dry-run``): the same
    comparison as ``upsert_sql``, as a read."""
    table = _q(connection, Product._meta.db_table)
    cols = _columns(connection, fields)
    sku, values = cols[0], cols[1:]
    stored = ", ".join(f"p.{c}" for c in values)
    incoming = ", ".join(f"i.{c}" for c in values)
    return (
        "SELECT count(*) FILTER (WHERE p.id IS NULL), "  # noqa: S608 (quoted)
        f"count(*) FILTER (WHERE p.id IS NOT NULL AND ({stored}) IS DISTINCT FROM ({incoming})) "
        f"FROM {unnest_source(connection, fields)} LEFT JOIN {table} p ON p.{sku} = i.{sku}"
    )


def temp_table_sql(connection, fields: Sequence[str]) -> tuple[str, str]:
    """The temporary table a COPY batch fills (dropped at commit, so it never outlives the
    transaction: it works behind PgBouncer in transaction mode), and the COPY statement."""
    table = _q(connection, TEMP_TABLE)
    cols = _columns(connection, fields)
    typed = ", ".join(
        f"{c} {kind}" for c, kind in zip(cols, _types(connection, fields), strict=True)
    )
    return (
        f"CREATE TEMPORARY TABLE {table} ({typed}) ON COMMIT DROP",
        f"COPY {table} ({', '.join(cols)}) FROM STDIN",
    )


def batch_run(work: Callable[[], object], *, using: str, what: str):
    """``work()`` in a short transaction of its own (``service_transaction``: durable, so a bulk
    write never runs inside a caller's transaction, which would make one long transaction of it),
    with its lock and statement timeouts, re-run on a deadlock, a serialization failure or a lock
    timeout; ``ServiceTransactionFailed`` when the attempts run out."""

    def batch():
        return work()

    batch.__qualname__ = what  # the name the retry log gives
    run = service_transaction(
        using=using, statement_timeout_ms=BATCH_STATEMENT_TIMEOUT_MS, attempts=BATCH_ATTEMPTS
    )
    return run(batch)()


def stop_reason(exc: BaseException) -> str:
    """Why a bulk write stopped at a batch, for ``ImportStopped`` and ``PriceRaiseStopped``.

    Not ``ServiceTransactionFailed``'s own message: that one ends "it may be made again", true of
    the batch but not of a price raise (made again whole, it raises the committed batches twice)
    and not what the stop's own message says to do next."""
    if isinstance(exc, ServiceTransactionFailed):
        last = error_text(exc.__cause__) if exc.__cause__ is not None else "aborted"
        return (
            f"the batch was refused on each of its {exc.attempts} attempts, the last time with "
            f"{last!r} ({exc.sqlstate}): other transactions held rows it had to write"
        )
    return error_text(exc)


# --- the price raise ------------------------------------------------------------------------

PRICE_RAISE_BATCH = 1000
PERCENT_MIN = Decimal("-99.99")
PERCENT_MAX = Decimal("1000")


def _price_raise_sql(connection) -> str:
    # The batch's ids by keyset on the primary key, as an array: the planner reads each by index
    # (a CTE joined to the table may get a sequential scan per batch).
    table = _q(connection, Product._meta.db_table)
    return (
        f"UPDATE {table} p SET price = round(p.price * %s, 2), version = p.version + 1, "  # noqa: S608
        "updated_at = now() "
        f"WHERE p.id = ANY(ARRAY(SELECT id FROM {table} WHERE starts_with(sku, %s) AND id > %s "
        "ORDER BY id LIMIT %s)) RETURNING p.id"
    )


def _run_sql(connection) -> tuple[str, str, str]:
    """The run's statements in each batch's transaction: lock its row and read the checkpoint;
    move the checkpoint; mark it finished."""
    table = _q(connection, PriceRaiseRun._meta.db_table)
    last_id, products, batches, batch_size, updated_at, finished_at = (
        _q(connection, PriceRaiseRun._meta.get_field(name).column)
        for name in ("last_id", "products", "batches", "batch_size", "updated_at", "finished_at")
    )
    return (
        # FOR NO KEY UPDATE: nothing references the run, and its key never changes.
        f"SELECT {last_id}, {finished_at} IS NOT NULL FROM {table} WHERE id = %s "  # noqa: S608
        "FOR NO KEY UPDATE",
        f"UPDATE {table} SET {last_id} = %s, {products} = {products} + %s, "  # noqa: S608
        f"{batches} = {batches} + 1, {batch_size} = %s, {updated_at} = now() WHERE id = %s",
        f"UPDATE {table} SET {finished_at} = now(), {updated_at} = now() WHERE id = %s",  # noqa: S608
    )


@dataclass
class PriceRaise:
    """What one call of ``product_prices_raise`` did (the run, ``run_id``, holds the totals of
    every call that worked on it)."""

    percent: Decimal
    sku_prefix: str
    run_id: int | None = None
    products: int = 0
    batches: int = 0
    last_id: int | None = None


PERCENT_PLACES = Decimal("0.0001")  # what PriceRaiseRun.percent holds


def _percent_clean(percent: Decimal) -> Decimal:
    if not isinstance(percent, Decimal) or not percent.is_finite():
        raise InvalidChange("percent", "must be a Decimal, such as Decimal('3')")
    if not PERCENT_MIN <= percent <= PERCENT_MAX:
        raise InvalidChange("percent", f"must be from {PERCENT_MIN} to {PERCENT_MAX}")
    if percent != percent.quantize(PERCENT_PLACES):
        raise InvalidChange("percent", "may have at most 4 decimal places")
    return percent


def _sku_prefix_clean(sku_prefix: str) -> str:
    longest = Product._meta.get_field("sku").max_length
    if not isinstance(sku_prefix, str):
        raise InvalidChange("sku_prefix", "must be a string, such as 'KITCHEN-'")
    if len(sku_prefix) > longest:
        raise InvalidChange("sku_prefix", f"may be at most {longest} characters, as a SKU")
    return sku_prefix


def _price_ceiling_check(factor: Decimal, sku_prefix: str, after_id: int, using: str) -> None:
    highest = (
        Product.objects.using(using)
        .filter(sku__startswith=sku_prefix, pk__gt=after_id)
        .order_by("-price")
        .values_list("price", flat=True)
        .first()
    )
    if highest is not None and (highest * factor).quantize(CENT, ROUND_HALF_UP) > MONEY_MAX:
        raise InvalidChange(
            "percent", f"would take the price {highest} past the largest price, {MONEY_MAX}"
        )


def _run_to_resume(
    run_id: int, *, percent: Decimal | None, sku_prefix: str | None, after_id: int, using: str
) -> PriceRaiseRun:
    """The unfinished run ``run_id``; its percent and prefix are the raise's, so any given here
    must be the same."""
    if isinstance(run_id, bool) or not isinstance(run_id, int):
        raise InvalidChange("run_id", "must be the id of a price raise run, a whole number")
    if after_id:
        raise InvalidChange(
            "after_id", "give run_id or after_id, not both: a run resumes from its own checkpoint"
        )
    run = PriceRaiseRun.objects.using(using).filter(pk=run_id).first()
    if run is None:
        raise InvalidChange("run_id", f"there is no price raise run {run_id}")
    if run.finished_at is not None:
        raise PriceRaiseRunFinished(run)
    if percent is not None and _percent_clean(percent) != run.percent:
        raise InvalidChange(
            "percent",
            f"run {run.pk} raises by {run.percent.normalize():f}%, not {percent.normalize():f}%: "
            "resume it without percent, or start a new raise",
        )
    if sku_prefix is not None and sku_prefix != run.sku_prefix:
        raise InvalidChange(
            "sku_prefix",
            f"run {run.pk} raises the SKUs starting with {run.sku_prefix!r}, not "
            f"{sku_prefix!r}: resume it without sku_prefix, or start a new raise",
        )
    return run


def product_prices_raise(
    *,
    percent: Decimal | None = None,
    sku_prefix: str | None = None,
    batch_size: int | None = None,
    run_id: int | None = None,
    after_id: int = 0,
    using: str = "default",
    progress: Callable[[PriceRaise], None] | None = None,
) -> PriceRaise:
    """Raise (or, with a negative ``percent``, lower) the price of every product whose SKU starts
    with ``sku_prefix`` by ``percent``, rounded to the cent: one UPDATE per batch of
    ``batch_size`` products (default 1,000; a resumed run's own) in id order, each in its own
    short transaction, versions advanced.

    Optimistic locking holds both ways: an edit that commits first is raised too (the UPDATE waits
    for its row lock, then computes from the committed price), and an edit made from a version
    read before the raise committed is refused (``StaleVersion``).

    Every raise is a run (``PriceRaiseRun``, its id in the result): each batch's transaction
    locks the run's row, reads the checkpoint from it, raises the next batch and moves the
    checkpoint, so both commit or neither. Failure behaviour: the batches before a failure stay
    committed and ``PriceRaiseStopped`` names the run; ``run_id=`` resumes it from its checkpoint
    (percent and prefix from the run: any given must match; a finished run is refused with
    ``PriceRaiseRunFinished``). That is exact even when the connection was lost as a batch
    committed, and two resumers of one run take its batches in turn, each raised once. The
    older ``after_id=`` starts a new run after that id: the weaker form, one batch short of the
    truth when the commit's answer was lost (that batch is raised twice).
    """
    run = _run_get(
        percent=percent,
        sku_prefix=sku_prefix,
        batch_size=batch_size,
        run_id=run_id,
        after_id=after_id,
        using=using,
    )
    result = PriceRaise(
        percent=run.percent, sku_prefix=run.sku_prefix, run_id=run.pk, last_id=run.last_id
    )
    batch = _batch_work(run, using)
    try:
        while ids := batch_run(batch, using=using, what="product_prices_raise batch"):
            result.products += len(ids)
            result.batches += 1
            result.last_id = max(ids)
            if progress is not None:
                progress(result)
    except (DatabaseError, psycopg.Error, ServiceTransactionFailed) as exc:
        raise PriceRaiseStopped(
            stop_reason(exc), run_id=run.pk, last_id=result.last_id, rows_done=result.products
        ) from exc
    finally:
        if result.products:
            catalog_invalidate()  # once, after the last commit (or the last that happened)
    return result


def _run_get(
    *,
    percent: Decimal | None,
    sku_prefix: str | None,
    batch_size: int | None,
    run_id: int | None,
    after_id: int,
    using: str,
) -> PriceRaiseRun:
    """The run to work on: ``run_id``'s, checked, or a new one, recorded once the arguments are
    checked (``batch_size``, when given, replaces a resumed run's from its next batch)."""
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise InvalidChange("batch_size", "must be a whole number of at least 1")
    if isinstance(after_id, bool) or not isinstance(after_id, int) or after_id < 0:
        raise InvalidChange("after_id", "must be a product id, a whole number")
    if run_id is not None:
        run = _run_to_resume(
            run_id, percent=percent, sku_prefix=sku_prefix, after_id=after_id, using=using
        )
        run.batch_size = batch_size or run.batch_size
        _price_ceiling_check(1 + run.percent / 100, run.sku_prefix, run.last_id or 0, using)
        return run
    if percent is None:
        raise InvalidChange("percent", "is required to start a raise (run_id resumes one)")
    percent, sku_prefix = _percent_clean(percent), _sku_prefix_clean(sku_prefix or "")
    _price_ceiling_check(1 + percent / 100, sku_prefix, after_id, using)
    # A transaction of its own, durable like the batches: inside a caller's transaction this
    # refuses before anything is written.
    return batch_run(
        lambda: PriceRaiseRun.objects.using(using).create(
            percent=percent,
            sku_prefix=sku_prefix,
            batch_size=batch_size or PRICE_RAISE_BATCH,
            last_id=after_id or None,
        ),
        using=using,
        what="product_prices_raise run",
    )


def _batch_work(run: PriceRaiseRun, using: str) -> Callable[[], list[int]]:
    """One batch of ``run``, for ``batch_run``: the ids it raised, none when the run is done."""
    connection = connections[using]
    statement = _price_raise_sql(connection)
    run_lock, run_checkpoint, run_finish = _run_sql(connection)
    factor = 1 + run.percent / 100

    def batch() -> list[int]:
        with connection.cursor() as cursor:
            # Under the run's row lock, from its checkpoint: another resumer of this run waits
            # here and then goes on after this batch.
            cursor.execute(run_lock, [run.pk])
            last_id, finished = cursor.fetchone()
            if finished:
                return []  # another resumer finished it
            cursor.execute(statement, [factor, run.sku_prefix, last_id or 0, run.batch_size])
            ids = [row[0] for row in cursor.fetchall()]
            if ids:
                cursor.execute(run_checkpoint, [max(ids), len(ids), run.batch_size, run.pk])
            else:
                cursor.execute(run_finish, [run.pk])
            return ids

    return batch
