from django import template

from core.money import money_format

register = template.Library()


@register.filter
def money(amount, currency=""):
    """``{{ account.balance|money:account.currency }}`` -> 1,234.50 EUR"""
    return money_format(amount, currency)


@register.filter
def signed_money(amount, currency=""):
    """``+1,234.50 EUR`` / ``−1,234.50 EUR``: a change of a balance."""
    return money_format(amount, currency, signed=True)
