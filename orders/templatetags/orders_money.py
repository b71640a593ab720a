from django import template

from orders.money import order_money as _order_money

register = template.Library()


@register.filter
def order_money(amount):
    """``{{ order.total|order_money }}`` -> 1,234.50 EUR"""
    return _order_money(amount)
