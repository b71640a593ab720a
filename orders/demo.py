"""Demo data for the orders app; ``manage.py seed_demo`` calls it.

Everything is written with ``bulk_create`` in batches, each batch its own transaction, so a
million orders take minutes and an interrupted run keeps what it wrote (whole batches only): running
it again adds only what is missing.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from orders.models import Customer, Order, OrderItem, OrderStatus, Payment, Product, Region
from orders.selectors import catalog_invalidate
from orders.services import customer_create

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


def _free_numbers(taken: set[str], label: Callable[[int], str], wanted: int) -> list[int]:
    """The first ``wanted`` numbers whose label is not taken yet (rows may have been deleted)."""
    return list(
        itertools.islice((i for i in itertools.count(1) if label(i) not in taken), max(0, wanted))
    )


def products_seed(count: int) -> int:
    taken = set(Product.objects.values_list("sku", flat=True))
    rng = random.Random(7 + len(taken))
    new = [
        Product(
            sku=f"SKU-{i:05d}",
            name=f"{WORDS[i % len(WORDS)]} {THINGS[(i // len(WORDS)) % len(THINGS)]}",
            price=Decimal(rng.randint(199, 19999)) / 100,
            stock=rng.randint(50, 5000),
        )
        for i in _free_numbers(taken, lambda i: f"SKU-{i:05d}", count - len(taken))
    ]
    Product.objects.bulk_create(new, batch_size=BATCH)
    if new:
        transaction.on_commit(catalog_invalidate)
    return len(new)


def customers_seed(count: int, *, demo_user=None) -> int:
    """Customers up to ``count`` (besides the demo user's own), with their normalized emails."""
    taken = set(Customer.objects.values_list("email_normalized", flat=True))
    numbers = _free_numbers(taken, lambda i: f"customer{i:06d}@example.com", count - len(taken))
    new = [
        Customer(
            name=f"Customer {i:06d}",
            email=f"customer{i:06d}@example.com",
            email_normalized=f"customer{i:06d}@example.com",
            region=REGIONS[i % len(REGIONS)],
        )
        for i in numbers
    ]
    Customer.objects.bulk_create(new, batch_size=BATCH)
    if demo_user is not None and not Customer.objects.filter(user=demo_user).exists():
        customer_create(
            name="Demo Customer", email="demo@example.com", region=Region.NORTH, user=demo_user
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
            orders, lines_of, paid_of = [], [], []
            for n in range(size):
                lines = rng.sample(products, rng.randint(1, min(5, len(products))))
                quantities = [rng.randint(1, 3) for _ in lines]
                lines = list(zip(lines, quantities, strict=True))
                total = sum((price * q for (_, price), q in lines), Decimal("0.00"))
                paid = rng.random() < 0.9
                orders.append(
                    Order(
                        customer_id=rng.choice(customers),
                        status=OrderStatus.PAID if paid else OrderStatus.CANCELLED,
                        total=total,
                        # Spread over 90 days, newer with every id, as real orders arrive.
                        created_at=now
                        - timedelta(minutes=SPAN_MINUTES * (missing - 1 - made - n) / missing),
                    )
                )
                lines_of.append(lines)
                paid_of.append(paid)
            # PostgreSQL returns the new ids, so items and payments can point at their orders.
            Order.objects.bulk_create(orders, batch_size=BATCH)
            OrderItem.objects.bulk_create(
                [
                    OrderItem(order=order, product_id=pid, quantity=q, unit_price=price)
                    for order, lines in zip(orders, lines_of, strict=True)
                    for (pid, price), q in lines
                ],
                batch_size=BATCH,
            )
            Payment.objects.bulk_create(
                [
                    Payment(
                        order=order,
                        method=rng.choice(["card", "wallet"]),
                        amount=order.total,
                        reference="demo",
                    )
                    for order, paid in zip(orders, paid_of, strict=True)
                    if paid
                ],
                batch_size=BATCH,
            )
        made += size
        if progress:
            progress(made, missing)
    return made
