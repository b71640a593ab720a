"""Demo data for the orders app; ``manage.py seed_demo`` calls it.

Everything is written with ``bulk_create`` in batches, each batch its own transaction, so a
million orders take minutes and an interrupted run keeps what it wrote: running it again adds only
what is missing.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from orders.models import Customer, Order, OrderItem, OrderStatus, Payment, Product, Region
from orders.selectors import catalog_invalidate

BATCH = 5000
WORDS = [
    "Oak",
    "Steel",
    "Linen",
    "Copper",
    "Granite",
    "Willow",
    "Amber",
    "Cobalt",
    "Maple",
    "Slate",
]
THINGS = ["Chair", "Lamp", "Desk", "Shelf", "Kettle", "Mug", "Rug", "Clock", "Vase", "Stool"]
REGIONS = list(Region.values)
SPAN_MINUTES = 90 * 24 * 60


def products_seed(count: int) -> int:
    have = Product.objects.count()
    rng = random.Random(7 + have)
    new = [
        Product(
            sku=f"SKU-{i:05d}",
            name=f"{WORDS[i % len(WORDS)]} {THINGS[(i // len(WORDS)) % len(THINGS)]}",
            price=Decimal(rng.randint(199, 19999)) / 100,
            stock=rng.randint(50, 5000),
        )
        for i in range(have + 1, count + 1)
    ]
    Product.objects.bulk_create(new, batch_size=BATCH, ignore_conflicts=True)
    if new:
        transaction.on_commit(catalog_invalidate)
    return len(new)


def customers_seed(count: int, *, demo_user=None) -> int:
    have = Customer.objects.count()
    new = [
        Customer(
            name=f"Customer {i:06d}",
            email=f"customer{i:06d}@example.com",
            region=REGIONS[i % len(REGIONS)],
        )
        for i in range(have + 1, count + 1)
    ]
    Customer.objects.bulk_create(new, batch_size=BATCH, ignore_conflicts=True)
    if demo_user is not None:
        Customer.objects.get_or_create(
            user=demo_user,
            defaults={"name": "Demo Customer", "email": "demo@example.com", "region": Region.NORTH},
        )
    return len(new)


def orders_seed(count: int, *, progress: Callable[[int, int], None] | None = None) -> int:
    """Bring the number of orders up to ``count``: 1 to 5 items each, most paid, dates spread over 90 days."""
    have = Order.objects.count()
    missing = max(0, count - have)
    if not missing:
        return 0
    customers = list(Customer.objects.values_list("pk", flat=True))
    products = list(Product.objects.values_list("pk", "price"))
    if not customers or not products:
        raise ValueError("seed customers and products before orders")
    rng = random.Random(11 + have)
    now = timezone.now()
    made = 0
    while made < missing:
        size = min(BATCH, missing - made)
        with transaction.atomic():
            start_id = (Order.objects.aggregate(m=Max("pk"))["m"] or 0) + 1
            orders, items, payments = [], [], []
            for n in range(size):
                lines = rng.sample(products, rng.randint(1, min(5, len(products))))
                quantities = [rng.randint(1, 3) for _ in lines]
                total = sum(
                    (price * q for (_, price), q in zip(lines, quantities, strict=True)),
                    Decimal("0.00"),
                )
                paid = rng.random() < 0.9
                orders.append(
                    Order(
                        pk=start_id + n,
                        customer_id=rng.choice(customers),
                        status=OrderStatus.PAID if paid else OrderStatus.CANCELLED,
                        total=total,
                        # Spread over 90 days, newer with every id, as real orders arrive.
                        created_at=now
                        - timedelta(minutes=SPAN_MINUTES * (missing - 1 - made - n) / missing),
                    )
                )
                items += [
                    OrderItem(order_id=start_id + n, product_id=pid, quantity=q, unit_price=price)
                    for (pid, price), q in zip(lines, quantities, strict=True)
                ]
                if paid:
                    payments.append(
                        Payment(
                            order_id=start_id + n,
                            method=rng.choice(["card", "wallet"]),
                            amount=total,
                            reference="demo",
                        )
                    )
            Order.objects.bulk_create(orders, batch_size=BATCH)
            OrderItem.objects.bulk_create(items, batch_size=BATCH)
            Payment.objects.bulk_create(payments, batch_size=BATCH)
        made += size
        if progress:
            progress(made, missing)
    _sequence_reset()
    return made


def _sequence_reset() -> None:
    """Explicit ids were written above; move the sequence past them so new orders do not collide."""
    from django.core.management.color import no_style
    from django.db import connection

    with connection.cursor() as cursor:
        for sql in connection.ops.sequence_reset_sql(no_style(), [Order]):
            cursor.execute(sql)
