"""``order_place``'s statements, compiled once per process (``dbops.statements``).

Building them with the ORM on every call cost more CPU than everything else an order does. The
SELECTs and UPDATEs are still written with the ORM (``F()`` takes stock relative to itself, the
version check is a filter); the INSERTs are column lists from the models.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import connection
from django.db.models import F
from django.db.models.functions import Now

from dbops.statements import AnyOf, CompiledSelect, CompiledUpdate, insert_sql
from orders.models import Customer, Order, OrderItem, OrderStatus, Payment, PaymentStatus, Product

CUSTOMER_EXISTS = CompiledSelect(
    lambda customer_id: Customer.objects.filter(pk=customer_id).order_by().values_list("pk")[:1],
    -1,
    name="customer_exists",
)

# Unique per customer: no ORDER BY.
ORDER_BY_KEY = CompiledSelect(
    lambda customer_id, key: Order.objects.filter(
        customer_id=customer_id, idempotency_key=key
    ).order_by()[:1],
    -1,
    "example-key",
    name="order_by_key",
)

# Price, stock and version are what an order needs; not the few KB of each description.
PRODUCTS_FOR_ORDER = CompiledSelect(
    lambda ids: Product.objects.defer("description").filter(AnyOf(F("pk"), ids)).order_by(),
    [-1],
    name="products_for_order",
)

# UPDATE ... SET stock = stock - q, version = version + 1 WHERE id = %s AND version = %s AND stock >= q
STOCK_TAKE = CompiledUpdate(
    lambda pk, version, quantity: (
        Product.objects.filter(pk=pk, version=version, stock__gte=quantity),
        {"stock": F("stock") - quantity, "version": F("version") + 1, "updated_at": Now()},
    ),
    # Valid values of each field (a negative version would be an empty result to Django).
    900_000_001,
    900_000_002,
    900_000_003,
    name="stock_take",
)

ORDER_STATUS_SET = CompiledUpdate(
    lambda pk, status: (Order.objects.filter(pk=pk), {"status": status}),
    -1,
    "example-status",
    name="order_status_set",
)

PAYMENT_REFERENCE_SET = CompiledUpdate(
    lambda pk, reference: (Payment.objects.filter(pk=pk), {"reference": reference}),
    -1,
    "example-reference",
    name="payment_reference_set",
)


ORDER_FIELDS = ("customer", "status", "total", "idempotency_key")
ITEM_FIELDS = ("order", "product", "quantity", "unit_price")
PAYMENT_FIELDS = ("order", "method", "amount", "status", "reference")


def _saved(instance, pk, created_at):
    instance.pk, instance.created_at = pk, created_at
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance


def order_insert(*, customer_id: int, total: Decimal, idempotency_key: str | None) -> Order:
    """INSERT a pending order; the instance as ``Order.objects.create`` would return it."""
    with connection.cursor() as cursor:
        cursor.execute(
            insert_sql(Order, ORDER_FIELDS, returning=("id", "created_at")),
            [customer_id, OrderStatus.PENDING.value, total, idempotency_key],
        )
        pk, created_at = cursor.fetchone()
    order = Order(
        customer_id=customer_id,
        status=OrderStatus.PENDING,
        total=total,
        idempotency_key=idempotency_key,
    )
    return _saved(order, pk, created_at)


def items_insert(order: Order, lines: dict[int, int], products: dict[int, Product]) -> None:
    """One INSERT for every line of the order, in product id order."""
    values = []
    for product_id, quantity in sorted(lines.items()):
        values += [order.pk, product_id, quantity, products[product_id].price]
    with connection.cursor() as cursor:
        cursor.execute(insert_sql(OrderItem, ITEM_FIELDS, rows=len(lines)), values)


def payment_insert(order: Order, method: str) -> Payment:
    """INSERT a captured payment of the order's total, its reference still empty."""
    status = PaymentStatus.CAPTURED
    with connection.cursor() as cursor:
        cursor.execute(
            insert_sql(Payment, PAYMENT_FIELDS, returning=("id", "created_at")),
            [order.pk, method, order.total, status.value, ""],
        )
        pk, created_at = cursor.fetchone()
    payment = Payment(order=order, method=method, amount=order.total, status=status)
    return _saved(payment, pk, created_at)
