"""Money: Decimal end to end, never float; one definition of its size for every model and form,
and one way to show it to people (thousands separators, two places, the currency)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import models

from core.exceptions import InvalidAmount

# 14 digits, 2 places: up to 999,999,999,999.99.
MONEY_DIGITS = 14
MONEY_PLACES = 2
MONEY_MAX = Decimal("999999999999.99")
CENT = Decimal("0.01")


def money_field(**kwargs: Any) -> models.DecimalField:
    """A model field for an amount of money."""
    return models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, **kwargs)


# An amount as people write it: ASCII digits, a decimal point, a minus sign. ``Decimal()`` reads
# much more: "1e3" (1,000), "1_000", "Infinity", digits of other scripts ("١٢") and surrounding
# spaces inside the string; a typed "1e3" must not send a thousand.
MONEY_TEXT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
MONEY_TEXT_HELP = "write it in digits with a decimal point, like 1234.50"


def money_text_check(text: str) -> str:
    """``text`` without surrounding spaces, if it is an amount as people write it (``MONEY_TEXT``);
    ``InvalidAmount`` otherwise."""
    stripped = text.strip()
    if not MONEY_TEXT.fullmatch(stripped):
        raise InvalidAmount(text, MONEY_TEXT_HELP)
    return stripped


def money_parse(value: Any) -> Decimal:
    """A positive amount with at most two decimal places, or ``InvalidAmount``. Floats are refused;
    text must be digits with a decimal point (``MONEY_TEXT``: no exponent, no other script)."""
    if isinstance(value, float | bool):
        raise InvalidAmount(value, "pass a Decimal or a string, never a float")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(money_text_check(str(value)))
    except (InvalidOperation, ValueError):
        raise InvalidAmount(value, "not a number") from None
    if not amount.is_finite():
        raise InvalidAmount(value, "not a finite number")
    if amount <= 0:
        raise InvalidAmount(value, "must be greater than zero")
    if amount > MONEY_MAX:
        raise InvalidAmount(value, f"at most {MONEY_MAX}")
    if amount.as_tuple().exponent < -MONEY_PLACES and amount != amount.quantize(CENT):
        raise InvalidAmount(value, "at most two decimal places")
    return amount.quantize(CENT)


# Shown to people: thousands separators, two places, the currency.
NBSP = "\u00a0"  # amount and currency stay on one line
MINUS = "\u2212"


def money_format(
    amount: Decimal | int | str | None, currency: str = "", *, signed: bool = False
) -> str:
    """``Decimal("1234.5"), "EUR"`` -> ``"1,234.50 EUR"``; ``signed`` adds "+" to positive amounts.

    Decimal all the way (never float), so 999,999,999,999.99 prints exactly.
    """
    if amount is None or amount == "":
        return ""
    value = Decimal(amount).quantize(CENT)
    sign = MINUS if value < 0 else ("+" if signed and value > 0 else "")
    text = f"{sign}{abs(value):,.2f}"
    return f"{text}{NBSP}{currency}" if currency else text
