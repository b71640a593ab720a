"""Pages: constant query counts, the N+1 version of the orders list, deferred columns, optimistic
vs pessimistic stock.

In one run against a throwaway PostgreSQL:
1. each orders page at 10, 100 and 1,000 orders: queries and median server time (in-process
   requests through the full middleware stack);
2. the orders list of 50 orders x 5 items rendered from ``order_list`` vs the same template fed
   plain querysets (a query per order for its items, per item for its product, per order for its
   customer and item count): queries, median time, ratio;
3. the orders list (50 orders x 5 items, each product with a description of a few KB) and the
   products list, with the description left out (``defer``, what the selectors do) and loaded:
   median time, description bytes loaded, ratio;
4. stock taken from one hot product by 1, 4 and 8 threads, each "order" one transaction taking
   one unit: optimistic (``orders.services._stock_take``: version-checked conditional UPDATE,
   re-read on a lost race) vs pessimistic (``select_for_update()`` then an ``F()`` UPDATE).

Writes bench/results/pages.md.

    .venv/bin/python bench/pages.py [--repeat 20] [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import LogCounter, percentile, table, threads_for, write_results  # noqa: E402
from devdb import embedded  # noqa: E402


def timed_requests(client, path: str, repeat: int) -> tuple[int, float]:
    """(queries, median ms) of warm requests; the count is the page's own X-DB-Query-Count header."""
    client.get(path)  # warm: process-wide caches filled
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        client.get(path)
        times.append((time.perf_counter() - started) * 1000)
    return int(response["X-DB-Query-Count"]), statistics.median(times)


def pages_section(repeat: int) -> str:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from orders.demo import customers_seed, orders_seed, products_seed
    from orders.models import Order
    from orders.services import customer_create

    staff = get_user_model().objects.create_user("bench-staff", password="x", is_staff=True)
    customer_create(user=staff, name="Bench Staff", email="staff@bench.example", region="north")
    client = Client()
    client.force_login(staff)
    products_seed(60)
    customers_seed(100)
    rows = []
    for size in (10, 100, 1000):
        orders_seed(size)
        order = Order.objects.order_by("pk").first()
        pages = [
            ("/orders/", "/orders/"),
            ("/orders/<id>/", f"/orders/{order.pk}/"),
            ("/orders/customers/<id>/", f"/orders/customers/{order.customer_id}/"),
            ("/orders/reports/top-customers/", "/orders/reports/top-customers/"),
            ("/orders/new/", "/orders/new/"),
        ]
        for label, path in pages:
            count, median = timed_requests(client, path, repeat)
            rows.append([label, size, count, median])
    rows.sort(key=lambda r: (r[0], r[1]))
    return table(["page", "orders in database", "queries", "median ms"], rows)


def n_plus_one_section(repeat: int) -> str:
    from django.db import connection
    from django.template.loader import render_to_string
    from django.test.utils import CaptureQueriesContext

    from orders.models import Order, OrderItem, Product
    from orders.selectors import order_list
    from orders.services import customer_create

    customer = customer_create(name="N+1 Customer", email="n1@bench.example", region="west")
    products = list(Product.objects.all()[:5])
    orders = Order.objects.bulk_create(
        [Order(customer=customer, total=Decimal("5.00"), status="paid") for _ in range(50)]
    )
    OrderItem.objects.bulk_create(
        [
            OrderItem(order=o, product=p, quantity=1, unit_price=p.price)
            for o in orders
            for p in products
        ]
    )

    def real():
        return render_to_string(
            "orders/_orders.html", {"orders": order_list(customer_id=customer.pk)}
        )

    def naive():
        page = list(Order.objects.filter(customer_id=customer.pk).order_by("-pk")[:50])
        for order in page:
            order.item_count = order.items.count()  # what the annotation does in SQL
        return render_to_string("orders/_orders.html", {"orders": page})

    results = {}
    for label, fn in (
        ("order_list (select_related + Prefetch + annotate)", real),
        ("plain querysets (N+1)", naive),
    ):
        fn()
        with CaptureQueriesContext(connection) as captured:
            html = fn()
        assert html.count("<tr>") == 51, "both render the same 50 rows"
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            fn()
            times.append((time.perf_counter() - started) * 1000)
        results[label] = (len(captured), statistics.median(times))
    (real_q, real_t), (naive_q, naive_t) = results.values()
    rows = [
        [label, q, t, f"{naive_t / t:.1f}x" if q == real_q else "1.0x"]
        for label, (q, t) in results.items()
    ]
    return table(
        ["orders list, 50 orders x 5 items", "queries", "median ms", "speed-up of the real page"],
        rows,
    )


def deferred_section(repeat: int) -> str:
    import random

    from django.db.models import Count, Prefetch
    from django.template.loader import render_to_string

    from orders.models import Order, OrderItem, Product
    from orders.selectors import order_list, product_list
    from orders.services import customer_create

    customer = customer_create(name="Deferred", email="deferred@bench.example", region="east")
    products = list(Product.objects.order_by("pk")[:60])
    rng = random.Random(13)
    orders = Order.objects.bulk_create(
        [Order(customer=customer, total=Decimal("5.00"), status="paid") for _ in range(50)]
    )
    OrderItem.objects.bulk_create(
        [
            OrderItem(order=o, product=p, quantity=1, unit_price=p.price)
            for o in orders
            for p in rng.sample(products, 5)
        ]
    )

    def orders_loaded():
        """The selector's queryset without its defer(): every item's product row in full."""
        items = OrderItem.objects.select_related("product").order_by("pk")
        return list(
            Order.objects.select_related("customer")
            .prefetch_related(Prefetch("items", queryset=items))
            .annotate(item_count=Count("items"))
            .filter(customer_id=customer.pk)
            .order_by("-pk")[:50]
        )

    def orders_page(fetch):
        return lambda: render_to_string("orders/_orders.html", {"orders": fetch()})

    def description_kb(products) -> float:
        return sum(len(p.__dict__.get("description", "").encode()) for p in products) / 1024

    def item_products(orders):
        return [item.product for order in orders for item in order.items.all()]

    def orders_deferred():
        return order_list(customer_id=customer.pk)

    def products_deferred():
        return list(product_list())

    def products_loaded():
        return list(Product.objects.order_by("pk")[:50])

    orders_kb = description_kb(item_products(orders_loaded()))
    assert description_kb(item_products(orders_deferred())) == 0
    pairs = [
        ("orders list, 50 orders x 5 items: query", orders_deferred, orders_loaded, orders_kb),
        (
            "orders list, 50 orders x 5 items: query + template",
            orders_page(orders_deferred),
            orders_page(orders_loaded),
            orders_kb,
        ),
        (
            "products list, 50 products: query",
            products_deferred,
            products_loaded,
            description_kb(products_loaded()),
        ),
    ]
    rows = []
    for page, deferred, loaded, kb in pairs:
        deferred_ms, loaded_ms = _interleaved_medians_ms(deferred, loaded, repeat)
        rows.append([page, "deferred", "0 KB", deferred_ms, "1.00x"])
        rows.append([page, "loaded", f"{kb:,.0f} KB", loaded_ms, f"{loaded_ms / deferred_ms:.2f}x"])
    return table(
        ["list", "description", "description text loaded", "median ms", "vs deferred"], rows
    )


def _interleaved_medians_ms(first, second, repeat: int) -> tuple[float, float]:
    """Median times of two functions run alternately, so a change in load hits both alike."""
    first(), second()
    times = ([], [])
    for _ in range(repeat):
        for fn, into in ((first, times[0]), (second, times[1])):
            started = time.perf_counter()
            fn()
            into.append((time.perf_counter() - started) * 1000)
    return statistics.median(times[0]), statistics.median(times[1])


def optimistic_take(product_id: int) -> None:
    from django.db import transaction

    from orders.models import Product
    from orders.services import _stock_take

    with transaction.atomic():
        _stock_take(Product.objects.get(pk=product_id), 1)


def pessimistic_take(product_id: int) -> None:
    from django.db import transaction
    from django.db.models import F

    from orders.exceptions import OutOfStock
    from orders.models import Product

    with transaction.atomic():
        product = Product.objects.select_for_update().get(pk=product_id)
        if product.stock < 1:
            raise OutOfStock(product, 1)
        Product.objects.filter(pk=product_id).update(stock=F("stock") - 1, version=F("version") + 1)


def stock_section(seconds: float) -> str:
    from django.db import DatabaseError

    from orders.exceptions import OrdersError
    from orders.models import Product

    counter = LogCounter("orders.stock")
    product = Product.objects.create(
        sku="HOT-1", name="Hot product", price=Decimal("1.00"), stock=10_000_000
    )
    rows = []
    for label, take in (
        ("optimistic (version check)", optimistic_take),
        ("pessimistic (select_for_update)", pessimistic_take),
    ):
        for threads in (1, 4, 8):
            counter.count = 0

            @contextmanager
            def worker(i, take=take):
                yield lambda: take(product.pk)

            result = threads_for(threads, seconds, worker, errors=(DatabaseError, OrdersError))
            flat = result["latencies"]
            rows.append(
                [
                    label,
                    threads,
                    result["done"] / seconds,
                    percentile(flat, 50),
                    percentile(flat, 99),
                    counter.count,
                    result["errors"],
                ]
            )
    return table(
        [
            "stock decrement, one hot product",
            "threads",
            "orders/s",
            "p50 ms",
            "p99 ms",
            "retries (lost races)",
            "failed",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=20, help="requests per page for the median")
    parser.add_argument("--seconds", type=float, default=5, help="measured time per stock run")
    args = parser.parse_args()

    with embedded.temporary_server() as server:
        os.environ["DATABASE_URL"] = server.socket_url()
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.site")
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        pages = pages_section(args.repeat)
        print(pages, file=sys.stderr)
        n1 = n_plus_one_section(args.repeat)
        print(n1, file=sys.stderr)
        deferred = deferred_section(args.repeat * 5)
        print(deferred, file=sys.stderr)
        stock = stock_section(args.seconds)

    body = (
        "In-process requests through the full middleware stack (DEBUG off), PostgreSQL 18 (embedded) over a unix "
        f"socket; medians of {args.repeat} warm requests.\n\n## Queries per page\n\n{pages}\n\n"
        f"## The orders list with and without the selector\n\n{n1}\n\n"
        "## Deferred columns: lists with and without the product descriptions\n\n"
        "Products from `seed_demo` (descriptions of 1.8 to 5 KB, 3.4 KB on average). The orders "
        "list is queried and rendered with its template; the products list is the query alone. "
        f"Medians of {args.repeat * 5} runs.\n\n{deferred}\n\n"
        f"## Optimistic vs pessimistic stock, {args.seconds:g} s per run\n\n{stock}\n"
    )
    write_results("pages", "Pages, N+1 and stock locking", "bench/pages.py", body)


if __name__ == "__main__":
    main()
