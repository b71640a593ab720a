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


class RecordingGateway:
    """The configured gateway, with each attempt recorded so a page can say which method was
    declined and which one paid. ``decline`` adds declines, for trying the fallback by hand: only
    with the simulator (a real gateway is never told to decline)."""

    def __init__(self, inner: PaymentGateway | None = None, *, decline=()):
        inner = inner or gateway_get()
        if decline:
            if not isinstance(inner, SimulatedGateway):
                raise ValueError("simulated declines need the SimulatedGateway")
            inner = SimulatedGateway(decline=inner.decline | set(decline))
        self.inner = inner
        self.declined: list[tuple[str, str]] = []
        self.captured: list[str] = []

    def charge(self, *, method: str, amount: Decimal, reference: str) -> str:
        try:
            result = self.inner.charge(method=method, amount=amount, reference=reference)
        except PaymentDeclined as exc:
            self.declined.append((method, exc.reason))
            raise
        self.captured.append(method)
        return result


def gateway_is_simulated() -> bool:
    return isinstance(gateway_get(), SimulatedGateway)
