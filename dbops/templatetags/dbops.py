from django import template
from django.utils.safestring import mark_safe

from dbops.middleware import QUERY_STATS_MARKER

register = template.Library()


@register.simple_tag
def query_stats():
    """This request's query count and database time, filled in by ``QueryCountMiddleware`` once
    the request is over (so the figures match the ``X-DB-Query-*`` headers exactly)."""
    return mark_safe(QUERY_STATS_MARKER)  # noqa: S308 (a constant)
