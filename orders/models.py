from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from core.idempotency import IDEMPOTENCY_KEY_MAX, idempotency_key_unique
from core.money import money_field


class Region(models.TextChoices):
    NORTH = "north", "North"
    SOUTH = "south", "South"
    EAST = "east", "East"
    WEST = "west", "West"


def email_normalize(email: str) -> str:
    """What makes two addresses the same customer: case and surrounding spaces do not."""
    return (email or "").strip().lower()


class Customer(models.Model):
    """Someone who orders; optionally the login that sees these orders (``user``).

    ``email_normalized`` is the worked example of expand -> backfill -> contract (see the README):
    added nullable (0002), filled by ``manage.py backfill_column``, then made unique and NOT NULL
    without blocking writes (0003). ``customer_create`` and ``customer_update`` keep it in step.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="customer",
    )
    name = models.CharField(max_length=200)
    email = models.EmailField(unique=True)
    email_normalized = models.CharField(max_length=254, editable=False)
    region = models.CharField(max_length=10, choices=Region.choices)
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        ordering = ["pk"]
        indexes = [models.Index(fields=["region"], name="customer_region")]
        constraints = [
            models.UniqueConstraint(
                fields=["email_normalized"], name="customer_email_normalized_unique"
            )
        ]

    def __str__(self):
        return f"{self.name} <{self.email}>"


class Product(models.Model):
    """Something sold from stock.

    ``stock`` is taken with conditional ``F()`` updates that check ``version`` (``order_place``),
    so two buyers of the last item cannot both get it; the CHECK constraint refuses a negative
    stock even if code forgets. ``version`` also guards edits (``product_update``).

    ``description`` is large (a few KB of text, TOASTed by PostgreSQL) and shown only on the
    product's own page: every list query leaves it out (``defer``/``only`` in the selectors), so a
    list of 50 orders does not carry the descriptions of all their products.
    """

    sku = models.CharField(max_length=40, unique=True)
    name = models.CharField(max_length=200)
    # db_default: rows inserted by code that predates the column (a rolling deploy) get "" too.
    description = models.TextField(blank=True, default="", db_default="")
    price = money_field()
    stock = models.IntegerField(default=0)
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["sku"]
        constraints = [
            models.CheckConstraint(condition=Q(stock__gte=0), name="product_stock_non_negative"),
            models.CheckConstraint(condition=Q(price__gte=0), name="product_price_non_negative"),
        ]

    def __str__(self):
        return f"{self.sku} {self.name}"


class OrderStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PAID = "paid", "Paid"
    CANCELLED = "cancelled", "Cancelled"


class Order(models.Model):
    """One purchase. Placed whole or not at all: items, stock and payment commit together."""

    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="orders", db_index=False
    )
    status = models.CharField(
        max_length=10, choices=OrderStatus.choices, default=OrderStatus.PENDING
    )
    total = money_field(default=Decimal("0.00"))
    idempotency_key = models.CharField(  # noqa: DJ001 (NULL: no key)
        max_length=IDEMPOTENCY_KEY_MAX, null=True, blank=True
    )
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        ordering = ["-pk"]
        constraints = [
            models.CheckConstraint(condition=Q(total__gte=0), name="order_total_non_negative"),
            idempotency_key_unique("customer", name="order_idempotency_key_per_customer"),
        ]
        indexes = [
            # A customer's newest orders, by keyset on id: the customer page and the orders list.
            models.Index(fields=["customer", "-id"], name="order_customer_newest"),
        ]

    def __str__(self):
        return f"Order #{self.pk}"


class OrderItem(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="items", db_index=False)
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="order_items")
    quantity = models.PositiveIntegerField()
    unit_price = money_field()

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gt=0), name="orderitem_quantity_positive"),
            # One line per product per order; the unique index also serves "items of an order".
            models.UniqueConstraint(
                fields=["order", "product"], name="orderitem_one_line_per_product"
            ),
        ]

    def __str__(self):
        # The product's name when it was loaded with the item (never a query of its own).
        product = self.product.name if OrderItem.product.is_cached(self) else self.product_id
        return f"{self.quantity} × {product}"

    @property
    def line_total(self) -> Decimal:
        return self.unit_price * self.quantity


class PaymentStatus(models.TextChoices):
    CAPTURED = "captured", "Captured"
    REFUNDED = "refunded", "Refunded"


class Payment(models.Model):
    """A captured payment. Declined attempts leave no row: each runs in a savepoint rolled back on decline."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="payments")
    method = models.CharField(max_length=20)
    amount = money_field()
    status = models.CharField(
        max_length=10, choices=PaymentStatus.choices, default=PaymentStatus.CAPTURED
    )
    reference = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive")
        ]

    def __str__(self):
        return f"{self.method} {self.amount} ({self.status})"


class PriceRaiseRun(models.Model):
    """One price raise (``orders.bulk.product_prices_raise``) and its checkpoint.

    A raise is not idempotent (twice is 6.09%), so where it stopped must be known exactly.
    ``last_id`` moves in the same transaction as each batch's UPDATE, under this row's lock: after
    any failure, a lost connection included (the batch committed, the client never heard), every
    product of the prefix up to ``last_id`` is raised and none after it. Resuming by ``run_id``
    reads it from here, never from what a client last saw, and two resumers of one run take its
    batches in turn. ``finished_at`` is set in the transaction that finds no product left.
    Written only by the service: the admin shows it.
    """

    percent = models.DecimalField(max_digits=8, decimal_places=4)
    sku_prefix = models.CharField(max_length=40, blank=True, default="", db_default="")
    batch_size = models.PositiveIntegerField(help_text="products per batch (the last call's)")
    last_id = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="every product of the prefix up to this id is raised, none after it",
    )
    products = models.BigIntegerField(default=0, db_default=0, help_text="products raised")
    batches = models.IntegerField(default=0, db_default=0, help_text="batches committed")
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    updated_at = models.DateTimeField(db_default=Now(), editable=False)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(batch_size__gte=1), name="priceraiserun_batch_size_positive"
            ),
        ]

    def __str__(self):
        return (
            f"Price raise #{self.pk}: {self.percent.normalize():f}% of {self.sku_prefix or 'all'}*"
        )
