"""Bulk writes: a save() loop, bulk_create, Django's upsert, the import's upsert and COPY + upsert;
then a price raise as one UPDATE per batch, bulk_update and a save() loop. Rows/s and WAL.

On a throwaway PostgreSQL (autovacuum off, so the WAL counted is the method's own), in one run.
Every method reads the same CSV bytes (100,000 products by default) and writes in batches of
1,000 rows per transaction unless its row says otherwise, in three situations: an empty table
(every row new), a table holding the file with every price different (every row changed), and a
table holding exactly the file (a re-run: nothing to change). Before each measurement the table
is reloaded to the same state, vacuumed and checkpointed, so every method pays the same
full-page writes. WAL is ``pg_wal_lsn_diff(pg_current_wal_lsn(), <before>)``.

The save() loop does what the import does, row by row: look the SKU up, insert it or, when a value
differs, save it with ``version + 1``. Django's upsert is ``bulk_create(update_conflicts=True,
unique_fields=["sku"], update_fields=[name, price, stock])``: it cannot advance ``version`` nor skip
unchanged rows. Writes bench/results/bulk.md.

    .venv/bin/python bench/bulk.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import table, write_results  # noqa: E402
from bench.dataset import django_setup  # noqa: E402
from devdb import embedded  # noqa: E402

BATCH = 1000
PERCENT = Decimal("3")
CENT = Decimal("0.01")


def catalogue(rows: int, *, changed: bool = False) -> bytes:
    """The supplier's file: ``changed`` moves every price by one cent."""
    out = io.StringIO()
    out.write("sku,name,price,stock\n")
    for i in range(rows):
        cents = 100 + (i * 7919) % 99_900 + (1 if changed else 0)
        out.write(f"BULK-{i:07d},Product {i},{cents // 100}.{cents % 100:02d},{i % 500}\n")
    return out.getvalue().encode()


def parsed(data: bytes):
    """What a plain Django import does with the file: csv and Decimal, no validation."""
    reader = csv.reader(io.StringIO(data.decode()))
    next(reader)
    for sku, name, price, stock in reader:
        yield sku, name, Decimal(price), int(stock)


def batches(items, size: int = BATCH):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- the methods: each takes the file's bytes -------------------------------------------------


def save_loop(data: bytes) -> None:
    from django.db import transaction

    from orders.models import Product

    for batch in batches(parsed(data)):
        with transaction.atomic():
            for sku, name, price, stock in batch:
                product = Product.objects.filter(sku=sku).first()
                if product is None:
                    Product(sku=sku, name=name, price=price, stock=stock).save()
                elif (product.name, product.price, product.stock) != (name, price, stock):
                    product.name, product.price, product.stock = name, price, stock
                    product.version += 1
                    product.save()


def bulk_create(data: bytes) -> None:
    from django.db import transaction

    from orders.models import Product

    for batch in batches(parsed(data)):
        with transaction.atomic():
            Product.objects.bulk_create(
                [Product(sku=s, name=n, price=p, stock=q) for s, n, p, q in batch]
            )


def django_upsert(data: bytes) -> None:
    from django.db import transaction

    from orders.models import Product

    for batch in batches(parsed(data)):
        with transaction.atomic():
            Product.objects.bulk_create(
                [Product(sku=s, name=n, price=p, stock=q) for s, n, p, q in batch],
                update_conflicts=True,
                unique_fields=["sku"],
                update_fields=["name", "price", "stock"],
            )


def importer(*, batch_size: int, copy: bool):
    def run(data: bytes) -> None:
        from orders.imports import products_import

        report = products_import(file=io.BytesIO(data), batch_size=batch_size, copy=copy)
        assert not report.rejects, report.rejects[:3]

    return run


IMPORT_METHODS = [
    ("save() per row (look up, insert or save)", save_loop),
    ("bulk_create", bulk_create),
    ("bulk_create(update_conflicts=True)", django_upsert),
    ("import_products (arrays, 1,000 per batch)", importer(batch_size=1000, copy=False)),
    ("import_products (arrays, 10,000 per batch)", importer(batch_size=10_000, copy=False)),
    (
        "import_products --copy (COPY + upsert, 10,000 per batch)",
        importer(batch_size=10_000, copy=True),
    ),
]


# --- the price raise --------------------------------------------------------------------------


def raised(price: Decimal) -> Decimal:
    # PostgreSQL's round() rounds halves away from zero.
    return (price * (1 + PERCENT / 100)).quantize(CENT, ROUND_HALF_UP)


def keyset(size: int = BATCH):
    from orders.models import Product

    after = 0
    while True:
        batch = list(
            Product.objects.defer("description").filter(pk__gt=after).order_by("pk")[:size]
        )
        if not batch:
            return
        yield batch
        after = batch[-1].pk


def raise_save_loop() -> None:
    from django.db import transaction
    from django.db.models.functions import Now

    for batch in keyset():
        with transaction.atomic():
            for product in batch:
                product.price, product.version = raised(product.price), product.version + 1
                product.updated_at = Now()
                product.save(update_fields=["price", "version", "updated_at"])


def raise_bulk_update() -> None:
    from django.db import transaction
    from django.db.models.functions import Now

    from orders.models import Product

    for batch in keyset():
        for product in batch:
            product.price, product.version = raised(product.price), product.version + 1
            product.updated_at = Now()
        with transaction.atomic():
            Product.objects.bulk_update(batch, ["price", "version", "updated_at"])


def raise_statement() -> None:
    from orders.bulk import product_prices_raise

    product_prices_raise(percent=PERCENT, batch_size=BATCH)


RAISE_METHODS = [
    ("save() per row", raise_save_loop),
    ("bulk_update (prices computed in Python)", raise_bulk_update),
    ("product_prices_raise (one UPDATE per batch)", raise_statement),
]


# --- measuring -------------------------------------------------------------------------------


def sql(statement: str, params=None):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchone() if cursor.description else None


def load(data: bytes | None) -> None:
    """The table as ``data`` left it (each row at version 1), vacuumed and checkpointed."""
    from django.db import connection

    sql("TRUNCATE orders_product CASCADE")
    if data is not None:
        connection.ensure_connection()
        with connection.connection.cursor() as cursor:
            copy = "COPY orders_product (sku, name, price, stock, version) FROM STDIN"
            with cursor.copy(copy) as stream:
                for row in parsed(data):
                    stream.write_row((*row, 1))
    sql("VACUUM ANALYZE orders_product")
    sql("CHECKPOINT")


def measure(work) -> tuple[float, int]:
    """(seconds, WAL bytes) of ``work()``."""
    (start,) = sql("SELECT pg_current_wal_lsn()::text")
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    (wal,) = sql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint", [start])
    return seconds, wal


def versions() -> str:
    from django.db.models import Count

    from orders.models import Product

    counts = Product.objects.values("version").annotate(n=Count("pk")).order_by("version")
    return ", ".join(f"v{c['version']}: {c['n']:,}" for c in counts)


def import_rows(rows: int) -> list[list]:
    new, changed = catalogue(rows), catalogue(rows, changed=True)
    situations = [
        ("every row new", None, new),
        ("every row changed", new, changed),
        ("re-run, nothing changed", changed, changed),
    ]
    out = []
    for situation, before, data in situations:
        baseline = None
        for label, method in IMPORT_METHODS:
            if method is bulk_create and before is not None:
                out.append([situation, label, "fails: the SKUs exist", "", "", "", "", ""])
                continue
            print(f"{situation}: {label}...", file=sys.stderr)
            load(before)
            seconds, wal = measure(lambda m=method, d=data: m(d))
            assert sql("SELECT count(*) FROM orders_product")[0] == rows
            baseline = baseline or seconds
            out.append(
                [
                    situation,
                    label,
                    f"{seconds:.1f}",
                    f"{rows / seconds:,.0f}",
                    f"{baseline / seconds:.1f}x",
                    f"{wal / 2**20:,.1f}",
                    f"{wal / rows:,.0f}",
                    versions(),
                ]
            )
    return out


def raise_rows(rows: int) -> list[list]:
    data = catalogue(rows)
    expected = {f"BULK-{i:07d}": raised(price) for i, (_, _, price, _) in enumerate(parsed(data))}
    out, baseline = [], None
    for label, method in RAISE_METHODS:
        print(f"price raise: {label}...", file=sys.stderr)
        load(data)
        seconds, wal = measure(method)
        from orders.models import Product

        got = dict(Product.objects.values_list("sku", "price"))
        wrong = sum(1 for sku, price in expected.items() if got.get(sku) != price)
        baseline = baseline or seconds
        out.append(
            [
                label,
                f"{seconds:.1f}",
                f"{rows / seconds:,.0f}",
                f"{baseline / seconds:.1f}x",
                f"{wal / 2**20:,.1f}",
                f"{wal / rows:,.0f}",
                versions(),
                wrong,
            ]
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    settings = {"max_wal_size": "4GB", "checkpoint_timeout": "30min", "autovacuum": "off"}
    with embedded.temporary_server(settings=settings) as server:
        django_setup(server.socket_url())
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        (version,) = sql("SHOW server_version")
        imports = import_rows(args.rows)
        raises = raise_rows(args.rows)
    body = f"""
{args.rows:,} products (sku, name, price, stock) from the same CSV bytes, parsed by every method;
1,000 rows per transaction unless the row says otherwise. PostgreSQL {version} (embedded,
autovacuum off), table reloaded, vacuumed and checkpointed before each row. "vs first" is the
row's speed against the first row of its situation, measured in the same run.

## Import

{table(["situation", "method", "seconds", "rows/s", "vs first", "WAL MB", "WAL bytes/row", "versions after"], imports)}

## Price raise (+{PERCENT}% on every product)

{table(["method", "seconds", "rows/s", "vs save()", "WAL MB", "WAL bytes/row", "versions after", "wrong prices"], raises)}
"""
    write_results("bulk", "Bulk writes: import and price raise", "bench/bulk.py", body)


if __name__ == "__main__":
    main()
