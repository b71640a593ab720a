"""Domain errors of the orders app; nothing was written when one is raised.

The errors every app shares (``InvalidChange``, ``IdempotencyConflict``, ``StaleVersion``) live in
``core.exceptions`` and are named here too, so callers import one module.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from core.exceptions import DomainError, IdempotencyConflict, InvalidChange, StaleVersion
from orders.money import order_money

__all__ = [
    "CustomerNotFound",
    "DomainError",
    "DuplicateCustomer",
    "IdempotencyConflict",
    "InvalidChange",
    "InvalidOrderLine",
    "OrdersError",
    "OutOfStock",
    "PaymentFailed",
    "PriceChanged",
    "ProductNotFound",
    "StaleVersion",
    "StockContention",
    "UnknownRegion",
]


class OrdersError(DomainError):
    """Base of the errors only the orders app raises."""

    message = "The order could not be placed."


class CustomerNotFound(OrdersError):
    def __init__(self, customer_id: Any):
        self.customer_id = customer_id
        super().__init__(f"Customer {customer_id} does not exist.")


class DuplicateCustomer(OrdersError):
    def __init__(self, email: str):
        self.email = email
        super().__init__(
            f"A customer with the email {email!r} exists already (case and spaces do not count)."
        )


class ProductNotFound(OrdersError):
    def __init__(self, product_ids: list):
        self.product_ids = product_ids
        super().__init__(f"Unknown product(s): {', '.join(map(str, product_ids))}.")


class InvalidOrderLine(OrdersError):
    def __init__(self, reason: str, line: Any = None):
        self.reason = reason
        self.line = line
        super().__init__(f"Invalid order line{f' {line!r}' if line is not None else ''}: {reason}.")


class OutOfStock(OrdersError):
    def __init__(self, product, requested: int):
        self.product = product
        self.requested = requested
        self.available = product.stock
        super().__init__(f"Only {product.stock} of {product.sku} in stock, {requested} requested.")


class PriceChanged(OrdersError):
    """A product's price changed while the order was being placed: the order would have been
    priced at one and its lines at the other. Nothing was ordered; the caller may order again at
    the new price."""

    def __init__(self, product, quoted: Decimal):
        self.product = product
        self.quoted = quoted
        self.price = product.price
        super().__init__(
            f"The price of {product.name} ({product.sku}) changed from {order_money(quoted)} to "
            f"{order_money(product.price)} while the order was placed. Nothing was ordered: "
            "check the new price and order again."
        )


class StockContention(OrdersError):
    """Other buyers kept winning the race for a product; the caller may try again."""

    def __init__(self, product, attempts: int):
        self.product = product
        self.attempts = attempts
        super().__init__(f"{product.sku} is in high demand right now; please try again.")


class PaymentFailed(OrdersError):
    def __init__(self, declined: list[tuple[str, str]]):
        self.declined = declined
        reasons = (
            "; ".join(f"{method}: {reason}" for method, reason in declined)
            or "no payment method given"
        )
        super().__init__(f"Payment failed ({reasons}). Nothing was ordered.")


class UnknownRegion(OrdersError):
    def __init__(self, region: str, known):
        self.region = region
        super().__init__(f"Unknown region {region!r}: use one of {', '.join(known)}.")
