"""When the debug toolbar shows (local settings only)."""

from debug_toolbar.middleware import show_toolbar as toolbar_default
from django.db import DatabaseError, connection


def show_toolbar(request) -> bool:
    """The toolbar's own rule (DEBUG, a request from INTERNAL_IPS), and a database that answers.

    The toolbar reads the session and renders the templates' context (the user) after the view:
    with the database down (``make stopdb``) that raised inside the toolbar, and every page of a
    logged-in person became Django's technical 500 page instead of the plain 503. Checking the
    connection costs nothing when it is open and healthy (Django's own health check, once per
    request with ``DB_CONN_HEALTH_CHECKS``)."""
    if not toolbar_default(request):
        return False
    try:
        connection.close_if_health_check_failed()
        connection.ensure_connection()
    except DatabaseError:
        return False
    return True
