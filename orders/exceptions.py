"""Domain errors of the orders app; nothing was written when one is raised, except by the two
that stop a bulk write part-way (``ImportStopped``, ``PriceRaiseStopped``): they say which whole
batches were committed before them, and how to finish.

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
    "ImportFileError",
    "ImportStopped",
    "InvalidChange",
    "InvalidOrderLine",
    "OrdersError",
    "OutOfStock",
    "PaymentFailed",
    "PriceChanged",
    "PriceRaiseRunFinished",
    "PriceRaiseStopped",
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


def _clause(reason: str) -> str:
    """A reason without its closing full stop, to be followed by one (a database error's first
    line has none; ``ServiceTransactionFailed``'s message has one)."""
    return reason.rstrip().rstrip(".")


class ImportFileError(OrdersError):
    """The file cannot be imported at all (missing, unreadable, not UTF-8, empty, a bad header):
    nothing of it was written. ``line`` is where the problem is, when there is one."""

    def __init__(self, reason: str, line: int | None = None):
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line else reason)


class ImportStopped(OrdersError):
    """The database refused a batch (or went away) part-way through an import. The batches before
    it are committed whole, the failed one rolled back whole; running the same file again
    finishes the import (the rows already written are unchanged, so they are not written again)."""

    def __init__(self, reason: str, *, rows_written: int, batches: int, line: int):
        self.reason = reason
        self.rows_written = rows_written
        self.batches = batches
        self.line = line
        super().__init__(
            f"The import stopped at the batch starting on line {line}: {_clause(reason)}. "
            f"{batches} batch{'es' * (batches != 1)} ({rows_written:,} rows) before it "
            f"{'is' if batches == 1 else 'are'} committed; that batch and "
            "the rest were not written. Run the same file again to finish: rows already written "
            "are left as they are."
        )


class PriceRaiseStopped(OrdersError):
    """The database refused a batch (or went away) part-way through a price raise. Its run
    (``orders.models.PriceRaiseRun`` ``run_id``) records what is committed: resume with
    ``run_id``, which goes on from the run's own checkpoint. ``last_id`` and ``rows_done`` are
    what this call saw committed; ``after_id=last_id`` resumes too, but is the weaker form: when
    the connection was lost as a batch committed (the commit reached the server, its answer never
    came back) the run is one batch further, and resuming from ``last_id`` raises that batch
    twice. Running the whole raise again would raise every committed product twice."""

    def __init__(self, reason: str, *, run_id: int, last_id: int | None, rows_done: int):
        self.reason = reason
        self.run_id = run_id
        self.last_id = last_id
        self.rows_done = rows_done
        super().__init__(
            f"The price raise stopped: {_clause(reason)}. {rows_done:,} products (ids up to "
            f"{last_id if last_id is not None else '-'}) are raised and committed; price raise "
            f"run {run_id} records exactly what is, even a batch whose commit the connection lost "
            f"the answer to. Resume with run_id={run_id}; do not start it over."
        )


class PriceRaiseRunFinished(OrdersError):
    """A finished price raise run was asked to resume: there is nothing left of it to raise."""

    def __init__(self, run):
        self.run = run
        super().__init__(
            f"Price raise run {run.pk} finished at {run.finished_at:%Y-%m-%d %H:%M:%S %Z}: "
            f"{run.products:,} products raised in {run.batches:,} batches. Nothing is left to "
            "resume; a new raise is a new call without run_id."
        )
