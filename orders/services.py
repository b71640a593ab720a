"""Every write of the orders app. Transactions are opened here and nowhere else.

Failure behaviour:
- ``order_place`` is all or nothing: on any domain error (unknown product, bad line, out of stock,
  a price changed while ordering, every payment declined) the transaction rolls back, so no order, no item, no payment remains and
  stock is unchanged. A replay with the same idempotency key returns the first order.
- ``product_restock`` and ``product_update`` change nothing when the version is stale
  (``StaleVersion``), so a concurrent edit is never overwritten.
- Every service that writes runs in ``@service_transaction`` (``dbops.transactions``): one durable
  transaction (refused inside a caller's ``atomic()``), a transaction-local lock timeout
  (``DBOPS["SERVICE_LOCK_TIMEOUT_MS"]``), the whole transaction re-run on a deadlock, a
  serialization failure or a lock timeout. When the attempts run out (another transaction kept
  the rows), ``dbops.transactions.ServiceTransactionFailed`` reaches the caller and nothing was
  written: a page answers 409, busy, try again.
- The catalog cache is invalidated only after a commit (``transaction.on_commit``): a rolled-back
  change never touches it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Now

from core.idempotency import idempotency_key_clean
from core.versioning import versioned_update
from dbops.errors import constraint_name
from dbops.transactions import service_transaction
from orders.exceptions import (
    CustomerNotFound,
    DuplicateCustomer,
    IdempotencyConflict,
    InvalidChange,
    InvalidOrderLine,
    OutOfStock,
    PaymentFailed,
    PriceChanged,
    ProductNotFound,
    StockContention,
)
from orders.models import Customer, Order, OrderStatus, Payment, Product, email_normalize
from orders.payments import PaymentDeclined, PaymentGateway, gateway_get
from orders.selectors import catalog_invalidate
from orders.sql import (
    CUSTOMER_EXISTS,
    ORDER_BY_KEY,
    ORDER_STATUS_SET,
    PAYMENT_REFERENCE_SET,
    PRODUCTS_FOR_ORDER,
    STOCK_TAKE,
    items_insert,
    order_insert,
    payment_insert,
)

logger = logging.getLogger("orders.stock")

MAX_QUANTITY = 10_000
MAX_LINES = 100
# How many times a buyer re-reads a product and tries again after another buyer changed it first.
STOCK_RACE_ATTEMPTS = 10
# The unique constraints that make a customer a duplicate (migrations 0001 and 0003).
CUSTOMER_EMAIL_CONSTRAINTS = {"orders_customer_email_key", "customer_email_normalized_unique"}
ORDER_KEY_CONSTRAINT = "order_idempotency_key_per_customer"


CUSTOMER_EDITABLE = {"name", "email", "region", "user"}


def _customer_save(customer: Customer) -> Customer:
    """Validate and save, keeping ``email_normalized`` in step with ``email``."""
    customer.email = (customer.email or "").strip()  # as typed, but never with spaces around it
    customer.email_normalized = email_normalize(customer.email)
    try:
        customer.full_clean(
            exclude=["email_normalized"], validate_unique=False, validate_constraints=False
        )
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise InvalidChange(field, " ".join(messages)) from None
    try:
        customer.save()
    except IntegrityError as exc:
        # The unique constraints decide, also between two concurrent callers (the service's
        # transaction rolls back with the error).
        if constraint_name(exc) in CUSTOMER_EMAIL_CONSTRAINTS:
            raise DuplicateCustomer(customer.email) from None
        raise
    return customer


@service_transaction
def customer_create(*, name: str, email: str, region: str, user=None) -> Customer:
    """A new customer; ``DuplicateCustomer`` when the email, ignoring case and spaces, is taken."""
    return _customer_save(Customer(name=name, email=email, region=region, user=user))


@service_transaction
def customer_update(*, customer_id: int, **changes: Any) -> Customer:
    """Change a customer's details; the normalized email follows the email."""
    unknown = set(changes) - CUSTOMER_EDITABLE
    if unknown:
        raise InvalidChange(", ".join(sorted(unknown)), "cannot be changed here")
    customer = Customer.objects.filter(pk=customer_id).first()
    if customer is None:
        raise CustomerNotFound(customer_id)
    for name, value in changes.items():
        setattr(customer, name, value)
    return _customer_save(customer)


def order_lines_clean(lines: Iterable[Any]) -> dict[int, int]:
    """{product_id: quantity} from [(product_id, quantity), ...] or [{"product_id", "quantity"}, ...]."""
    cleaned: dict[int, int] = {}
    for line in lines:
        if isinstance(line, Mapping):
            product_id, quantity = line.get("product_id"), line.get("quantity")
        else:
            try:
                product_id, quantity = line
            except (TypeError, ValueError):
                raise InvalidOrderLine("expected (product_id, quantity)", line) from None
        if isinstance(product_id, bool) or not isinstance(product_id, int) or product_id < 1:
            raise InvalidOrderLine("unknown product", line)
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            raise InvalidOrderLine("quantity must be a whole number", line)
        if not 1 <= quantity <= MAX_QUANTITY:
            raise InvalidOrderLine(f"quantity must be between 1 and {MAX_QUANTITY}", line)
        if product_id in cleaned:
            raise InvalidOrderLine("the same product appears twice; combine the lines", line)
        cleaned[product_id] = quantity
    if not cleaned:
        raise InvalidOrderLine("an order needs at least one line")
    if len(cleaned) > MAX_LINES:
        raise InvalidOrderLine(f"at most {MAX_LINES} lines")
    return cleaned


def _stock_take(product: Product, quantity: int) -> Product:
    """Take ``quantity`` of ``product`` with a version-checked conditional UPDATE.

    ``UPDATE ... SET stock = stock - q, version = version + 1 WHERE id = %s AND version = %s AND
    stock >= q``: one row means this buyer won, and the product is still the one the order read
    (its price included); zero rows means the product changed since it was read (re-read and try
    again, a bounded number of times) or stock is really short (OutOfStock).

    The version check is what keeps an order's price honest: the order is priced from the product
    it read, and only an unchanged version proves that read still holds when the stock is taken.
    A re-read that finds another price raises ``PriceChanged`` (the whole order rolls back), so the
    total, the lines and the payment are always priced alike. Another buyer's order or a restock
    changes the version but not the price: re-read and go on.
    """
    quoted = product.price
    for _ in range(STOCK_RACE_ATTEMPTS):
        if product.price != quoted:
            raise PriceChanged(product, quoted)
        if product.stock < quantity:
            raise OutOfStock(product, quantity)
        if STOCK_TAKE.execute(product.pk, product.version, quantity):
            product.stock -= quantity
            product.version += 1
            return product
        logger.debug("lost the race for %s, re-reading", product.sku)
        current = PRODUCTS_FOR_ORDER.objects([product.pk])
        if not current:
            raise ProductNotFound([product.pk])
        product = current[0]
    raise StockContention(product, STOCK_RACE_ATTEMPTS)


def _same_order(order: Order, lines: dict[int, int]) -> bool:
    return dict(order.items.values_list("product_id", "quantity")) == lines


@service_transaction
def _order_place_transaction(
    *,
    customer_id: int,
    lines: dict[int, int],
    payment_methods: tuple[str, ...],
    idempotency_key: str | None,
    gateway: PaymentGateway,
) -> Order:
    """One attempt at the whole order, in one transaction; ``service_transaction`` may run it again
    after a deadlock, a serialization failure or a lock timeout, so it has no effect outside it."""
    # Compiled once per process (orders/sql.py): the ORM's per-call cost left this hot path.
    if not CUSTOMER_EXISTS.rows(customer_id):
        raise CustomerNotFound(customer_id)
    if idempotency_key is not None:
        for order in ORDER_BY_KEY.objects(customer_id, idempotency_key):
            if not _same_order(order, lines):
                raise IdempotencyConflict(idempotency_key)
            return order
    products = {product.pk: product for product in PRODUCTS_FOR_ORDER.objects(list(lines))}
    missing = sorted(set(lines) - set(products))
    if missing:
        raise ProductNotFound(missing)

    total = sum((products[pid].price * qty for pid, qty in lines.items()), Decimal("0.00"))
    order = order_insert(customer_id=customer_id, total=total, idempotency_key=idempotency_key)
    # Products in id order: two orders for the same products wait for each other rather than deadlock.
    for product_id in sorted(lines):
        products[product_id] = _stock_take(products[product_id], lines[product_id])
    items_insert(order, lines, products)

    _payment_take(order, payment_methods, gateway)
    ORDER_STATUS_SET.execute(order.pk, OrderStatus.PAID.value)
    order.status = OrderStatus.PAID
    transaction.on_commit(catalog_invalidate)
    return order


def _payment_take(order: Order, methods: tuple[str, ...], gateway: PaymentGateway) -> Payment:
    """Charge the order with the first method that is not declined; ``PaymentFailed`` when all are."""
    declined: list[tuple[str, str]] = []
    for method in methods:
        try:
            # A savepoint per attempt: a declined method leaves no payment row, and the next is tried.
            with transaction.atomic():
                payment = payment_insert(order, method)
                payment.reference = gateway.charge(
                    method=method, amount=order.total, reference=f"order-{order.pk}"
                )
                PAYMENT_REFERENCE_SET.execute(payment.pk, payment.reference)
        except PaymentDeclined as exc:
            declined.append((method, exc.reason))
            continue
        return payment
    # Raising rolls back the whole transaction: order, items and stock are as before.
    raise PaymentFailed(declined)


def order_place(
    *,
    customer_id: int,
    lines: Iterable[Any],
    payment_methods: Iterable[str] = ("card", "wallet"),
    idempotency_key: str | None = None,
    gateway: PaymentGateway | None = None,
) -> Order:
    """Place an order: stock taken, each payment method tried in turn, all or nothing."""
    cleaned = order_lines_clean(lines)
    methods = tuple(payment_methods)
    idempotency_key = idempotency_key_clean(idempotency_key)
    try:
        return _order_place_transaction(
            customer_id=customer_id,
            lines=cleaned,
            payment_methods=methods,
            idempotency_key=idempotency_key,
            gateway=gateway or gateway_get(),
        )
    except IntegrityError as exc:
        # Two calls with one key at once: the second waited on the unique index, then failed when
        # the first committed. Its transaction is gone; answer with the order the first one made.
        if idempotency_key is None or constraint_name(exc) != ORDER_KEY_CONSTRAINT:
            raise
        order = Order.objects.get(customer_id=customer_id, idempotency_key=idempotency_key)
        if not _same_order(order, cleaned):
            raise IdempotencyConflict(idempotency_key) from exc
        return order


def _positive_int(value: Any, field: str, maximum: int = 1_000_000) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidChange(field, f"must be a whole number from 1 to {maximum}")
    return value


def _product_versioned_update(product_id: int, expected_version: int, **values: Any) -> Product:
    current = versioned_update(
        Product, pk=product_id, expected_version=expected_version, updated_at=Now(), **values
    )
    if current is None:
        raise ProductNotFound([product_id])
    return current


@service_transaction
def product_restock(*, product_id: int, quantity: int, expected_version: int) -> Product:
    """Add stock if nobody changed the product since ``expected_version`` was read."""
    quantity = _positive_int(quantity, "quantity")
    product = _product_versioned_update(product_id, expected_version, stock=F("stock") + quantity)
    transaction.on_commit(catalog_invalidate)
    return product


PRODUCT_EDITABLE = {"name", "description", "price", "stock"}


@service_transaction
def product_update(*, product_id: int, expected_version: int, **changes: Any) -> Product:
    """Edit a product (admin) with optimistic locking; a stale edit raises ``StaleVersion``."""
    unknown = set(changes) - PRODUCT_EDITABLE
    if unknown:
        raise InvalidChange(", ".join(sorted(unknown)), "cannot be changed here")
    if "price" in changes and (not isinstance(changes["price"], Decimal) or changes["price"] < 0):
        raise InvalidChange("price", "must be a Decimal of zero or more")
    if "stock" in changes and (
        isinstance(changes["stock"], bool)
        or not isinstance(changes["stock"], int)
        or changes["stock"] < 0
    ):
        raise InvalidChange("stock", "must be a whole number of zero or more")
    product = _product_versioned_update(product_id, expected_version, **changes)
    transaction.on_commit(catalog_invalidate)
    return product
