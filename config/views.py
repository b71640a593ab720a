import sys

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.db import InterfaceError, OperationalError
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.views.decorators.cache import cache_control

from config.patterns import GROUPS, patterns_grouped
from dbops.middleware import database_unavailable_response


def home(request):
    return render(request, "home.html")


def patterns_index(request):
    """Every pattern of the README's map, where its code lives and where to see it work."""
    return render(
        request, "patterns/index.html", {"groups": patterns_grouped(), "group_count": len(GROUPS)}
    )


@cache_control(max_age=86400)
def favicon(request):
    return redirect(static("favicon.svg"), permanent=True)


class LogoutView(auth_views.LogoutView):
    """Django's logout, saying so on the page it lands on."""

    def post(self, request, *args, **kwargs):
        response = super().post(request, *args, **kwargs)
        # Stored in a cookie by the default message storage: it outlives the session just ended.
        messages.info(request, "You are logged out.")
        return response


def csrf_failure(request, reason=""):
    return render(request, "403_csrf.html", status=403)


def server_error(request):
    """handler500: a database outage anywhere in the stack is a 503, anything else a plain 500."""
    exc = sys.exc_info()[1]
    if isinstance(exc, OperationalError | InterfaceError):
        return database_unavailable_response(request, exc).render()
    return render(request, "500.html", status=500)
