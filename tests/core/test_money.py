from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from core.exceptions import InvalidAmount
from core.forms import AmountField
from core.money import money_format, money_parse


@pytest.mark.parametrize(
    "amount, currency, shown",
    [
        (Decimal("1234.5"), "EUR", "1,234.50\u00a0EUR"),
        (Decimal("999999999999.99"), "USD", "999,999,999,999.99\u00a0USD"),
        (Decimal("0"), "EUR", "0.00\u00a0EUR"),
        (Decimal("-12.3"), "EUR", "\u221212.30\u00a0EUR"),
        (Decimal("7"), "", "7.00"),
        (None, "EUR", ""),
    ],
)
def test_money_has_separators_two_places_and_its_currency(amount, currency, shown):
    assert money_format(amount, currency) == shown


def test_signed_money_marks_a_credit_with_a_plus():
    assert money_format(Decimal("5"), "EUR", signed=True) == "+5.00\u00a0EUR"
    assert money_format(Decimal("-5"), "EUR", signed=True) == "\u22125.00\u00a0EUR"


@pytest.mark.parametrize(
    "text", ["1e3", "1E3", "1e-2", "1_000", "١٢", "½", "0x10", "1,000.00", "+5", "Infinity", "5 0"]
)
def test_money_is_typed_in_digits_never_exponents_or_other_scripts(text):
    with pytest.raises(InvalidAmount, match="in digits with a decimal point"):
        money_parse(text)


@pytest.mark.parametrize(
    "text, amount", [("1000", "1000.00"), (" 12.5 ", "12.50"), ("0.01", "0.01"), (".5", "0.50")]
)
def test_money_in_digits_is_read_as_written(text, amount):
    assert money_parse(text) == Decimal(amount)


def test_money_from_code_keeps_its_decimal():
    assert money_parse(Decimal("1E+3")) == Decimal("1000.00")
    assert money_parse(7) == Decimal("7.00")


@pytest.mark.parametrize("text", ["1e3", "1E+3", "1_000", "١٢", "0x1F"])
def test_the_amount_field_refuses_what_is_not_digits(text):
    field = AmountField()
    with pytest.raises(ValidationError, match="in digits with a decimal point"):
        field.clean(text)
    assert field.clean(" 1000 ") == Decimal("1000")
