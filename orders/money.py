"""The shop sells in one currency (money accounts carry their own)."""

from decimal import Decimal

from core.money import money_format

ORDER_CURRENCY = "EUR"


def order_money(amount: Decimal | None) -> str:
    return money_format(amount, ORDER_CURRENCY)
