from decimal import Decimal

import pytest

from core.money import money_format


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
