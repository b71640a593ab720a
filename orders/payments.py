"""A small payment-gateway interface and its default: a local simulator with controllable declines."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string


class PaymentDeclined(Exception):
    def __init__(self, method: str, reason: str = "declined"):
        self.method = method
        self.reason = reason
        super().__init__(f"{method}: {reason}")


class PaymentGateway(Protocol):
    def charge(self, *, method: str, amount: Decimal, reference: str) -> str:
        """Capture ``amount``; return the gateway's reference, or raise ``PaymentDeclined``."""


class SimulatedGateway:
    """Captures everything except the methods named in ``decline`` (or settings.PAYMENT_DECLINE_METHODS)."""

    def __init__(self, decline: set[str] | None = None):
        self.decline = set(
            getattr(settings, "PAYMENT_DECLINE_METHODS", ()) if decline is None else decline
        )
        self.charges: list[tuple[str, Decimal, str]] = []

    def charge(self, *, method: str, amount: Decimal, reference: str) -> str:
        if method in self.decline:
            raise PaymentDeclined(method, "declined by the simulator")
        self.charges.append((method, amount, reference))
        return f"sim-{uuid.uuid4().hex[:16]}"


def gateway_get() -> PaymentGateway:
    return import_string(getattr(settings, "PAYMENT_GATEWAY", "orders.payments.SimulatedGateway"))()
