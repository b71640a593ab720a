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
# Product copy, put together from these: a few KB per product, as real descriptions run.
OPENINGS = [
    "Made to last for years of daily use",
    "Designed in a small studio and built in a family workshop",
    "A quiet piece that fits a busy home",
    "Our best seller for the third year running",
]
DETAILS = [
    "Each piece is finished by hand, so the grain and tone vary slightly from one to the next.",
    "The joints are glued and pinned rather than screwed, and stay tight as the seasons change.",
    "Every surface is sanded in three passes and sealed with a plant-based oil that you can renew.",
    "Packed flat in recycled card without plastic; assembly takes ten minutes with the key supplied.",
    "Tested for stability at twice the load it will ever carry, on floors that are not quite level.",
    "Spare parts are kept in stock for ten years, and every part can be ordered on its own.",
    "The colour is mixed in small batches; order everything you need for one room at once.",
    "Wipe with a damp cloth; avoid solvents, which strip the finish and dull the surface.",
]
# Each specification with its unit and a plausible range.
SPECS = [
    ("Width", "cm", 10, 200),
    ("Depth", "cm", 10, 120),
    ("Height", "cm", 10, 220),
    ("Weight", "kg", 1, 60),
    ("Warranty", "years", 1, 10),
]
SPAN_MINUTES = 90 * 24 * 60


def _free_numbers(taken: set[str], label: Callable[[int], str], wanted: int) -> list[int]:
    """The first ``wanted`` numbers whose label is not taken yet (rows may have been deleted)."""
    return list(
        itertools.islice((i for i in itertools.count(1) if label(i) not in taken), max(0, wanted))
    )


def _description(rng: random.Random) -> str:
    """Four to eight paragraphs of product copy and a line of specifications: about 2 to 6 KB."""
    paragraphs = [
        f"{rng.choice(OPENINGS)}. " + " ".join(rng.sample(DETAILS, rng.randint(4, 7)))
        for _ in range(rng.randint(4, 8))
    ]
    specs = " · ".join(
        f"{name}: {rng.randint(low, high)} {unit}" for name, unit, low, high in SPECS
    )
    return "\n\n".join([*paragraphs, specs])


def products_seed(count: int) -> int:
    taken = set(Product.objects.values_list("sku", flat=True))
    rng = random.Random(7 + len(taken))
    new = [
        Product(
            sku=f"SKU-{i:05d}",
            name=f"{WORDS[i % len(WORDS)]} {THINGS[(i // len(WORDS)) % len(THINGS)]}",
            price=Decimal(rng.randint(199, 19999)) / 100,
            stock=rng.randint(50, 5000),
            description=_description(rng),
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
        # Spread over 90 days, newer with every id, as real orders arrive.
        dates = [
            now - timedelta(minutes=SPAN_MINUTES * (missing - 1 - made - n) / missing)
            for n in range(size)
        ]
        _orders_batch(rng, customers, products, dates)
        made += size
        if progress:
            progress(made, missing)
    return made


@transaction.atomic
def _orders_batch(rng: random.Random, customers: list, products: list, dates: list) -> None:
    """One batch of orders with their items and (for the paid ones) payments, in one transaction."""
    orders, lines_of = [], []
    for created_at in dates:
        picked = rng.sample(products, rng.randint(1, min(5, len(products))))
        lines = [(product, rng.randint(1, 3)) for product in picked]
        paid = rng.random() < 0.9
        orders.append(
            Order(
                customer_id=rng.choice(customers),
                status=OrderStatus.PAID if paid else OrderStatus.CANCELLED,
                total=sum((price * q for (_, price), q in lines), Decimal("0.00")),
                created_at=created_at,
            )
        )
        lines_of.append(lines)
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
                order=o, method=rng.choice(["card", "wallet"]), amount=o.total, reference="demo"
            )
            for o in orders
            if o.status == OrderStatus.PAID
        ],
        batch_size=BATCH,
    )
