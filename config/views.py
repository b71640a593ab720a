import sys

from django.db import InterfaceError, OperationalError
from django.shortcuts import render

from dbops.middleware import database_unavailable_response


def home(request):
    return render(request, "home.html")


def csrf_failure(request, reason=""):
    return render(request, "403_csrf.html", status=403)


def server_error(request):
    """handler500: a database outage anywhere in the stack is a 503, anything else a plain 500."""
    exc = sys.exc_info()[1]
    if isinstance(exc, OperationalError | InterfaceError):
        return database_unavailable_response(request, exc).render()
    return render(request, "500.html", status=500)
