from decimal import Decimal, InvalidOperation

from django import template
from django.utils.safestring import mark_safe

from dbops.middleware import QUERY_STATS_MARKER

register = template.Library()


@register.simple_tag
def query_stats():
    """This request's query count and database time, filled in by ``QueryCountMiddleware`` once
    the request is over (so the figures match the ``X-DB-Query-*`` headers exactly)."""
    return mark_safe(QUERY_STATS_MARKER)  # noqa: S308 (a constant)


@register.filter
def thousands(value):
    """``1234567`` as ``1,234,567``, also a number given as text (what ``floatformat`` returns);
    anything else unchanged. dbops's own, so its pages need no ``django.contrib.humanize``, which
    a project may not install."""
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        return value
    if not number.is_finite():
        return value
    return f"{number:,f}"
