"""Form fields the apps share."""

from __future__ import annotations

from decimal import Decimal

from django import forms

from core.idempotency import IDEMPOTENCY_KEY_MAX
from core.money import MONEY_DIGITS, MONEY_MAX, MONEY_PLACES


class IdempotencyKeyField(forms.CharField):
    """A hidden key, fresh for each rendered form: a double click or a browser retry of the form
    sends the same key, and the service acts once."""

    widget = forms.HiddenInput

    def __init__(self, **kwargs):
        super().__init__(max_length=IDEMPOTENCY_KEY_MAX, **kwargs)


class AmountField(forms.DecimalField):
    """A positive amount of money, within what the money columns hold."""

    def __init__(self, **kwargs):
        super().__init__(
            max_digits=MONEY_DIGITS,
            decimal_places=MONEY_PLACES,
            min_value=Decimal("0.01"),
            max_value=MONEY_MAX,
            **kwargs,
        )
