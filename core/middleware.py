"""Request hardening for every view, ours and Django's (admin, auth): one place each.

- ``RejectNulBytesMiddleware``: a NUL byte anywhere a client can put one (path, query string, form
  fields, headers, cookies) is a 400 before any view, session lookup or login throttle runs.
  PostgreSQL text cannot hold NUL, so such a value would otherwise reach the database as a
  ``DataError`` (a 500) wherever it is used: an admin filter, the admin search, the session key,
  the login throttle's record of the user agent. Refused rather than stripped: no legitimate client
  sends NUL in text, and silently changing what was sent ("a\\0b" searched as "ab") hides probing.
- ``BadRequestPageMiddleware``: a request the app refuses (a malformed cursor, an unknown region, a
  NUL byte) is the site's own 400 page, saying why, in every mode. Under DEBUG Django answers
  ``BadRequest`` with its technical page, whose inline styles the Content-Security-Policy blocks
  (an unstyled page and a console full of violations).
- ``PrivateCacheMiddleware``: a response to a logged-in person is personal (balances, orders, the
  admin), so it is ``Cache-Control: private, no-store``: no shared cache keeps it and no browser
  stores it on disk. Keyed on the person rather than on a list of views, so a new page cannot
  forget it.
"""

from __future__ import annotations

from django.core.exceptions import BadRequest
from django.db import DatabaseError
from django.template.response import TemplateResponse
from django.utils.cache import patch_cache_control
from django.utils.deprecation import MiddlewareMixin

NUL = "\x00"


def _has_nul(values) -> bool:
    return any(NUL in value for value in values if isinstance(value, str))


def nul_source(request) -> str | None:
    """Where the request carries a NUL byte ("path", "query string", ...), or None."""
    if NUL in request.path_info or NUL in request.path:
        return "path"
    if _has_nul(request.GET.keys()) or _has_nul(v for _, vs in request.GET.lists() for v in vs):
        return "query string"
    if _has_nul(request.COOKIES.keys()) or _has_nul(request.COOKIES.values()):
        return "cookie"
    if _has_nul(value for key, value in request.META.items() if key.startswith("HTTP_")):
        return "header"
    if request.method == "POST":
        fields = request.POST
        if _has_nul(fields.keys()) or _has_nul(v for _, vs in fields.lists() for v in vs):
            return "form field"
    return None


def bad_request_response(request, reason: str) -> TemplateResponse:
    """The site's 400 page, with the reason (written by this app, never a traceback)."""
    response = TemplateResponse(request, "400.html", {"reason": reason}, status=400)
    return response.render()


class RejectNulBytesMiddleware:
    """400 for a NUL byte in the path, query string, form fields, headers or cookies."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        where = nul_source(request)
        if where is not None:
            # Answered here rather than raised: above the session and the user, nothing of the
            # request is read; and Django's DEBUG page for BadRequest breaks under the CSP.
            return bad_request_response(request, f"NUL byte in the request's {where}.")
        return self.get_response(request)


class BadRequestPageMiddleware(MiddlewareMixin):
    """A view's ``BadRequest`` as the site's 400 page, with its reason, also under DEBUG.
    ``MiddlewareMixin``: sync and async, like the async views that raise it."""

    def process_exception(self, request, exception):
        if isinstance(exception, BadRequest):
            return bad_request_response(request, str(exception))
        return None


class PrivateCacheMiddleware:
    """``Cache-Control: private, no-store`` on every response to a logged-in person."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        # A response that is already no-store (the health probes) needs nothing, and this way a
        # probe never makes the session lookup that request.user would.
        if "no-store" in response.get("Cache-Control", ""):
            return response
        if _personal(request):
            patch_cache_control(response, private=True, no_store=True)
        return response


def _personal(request) -> bool:
    user = getattr(request, "user", None)
    try:
        return user is not None and user.is_authenticated
    except DatabaseError:
        return True  # the session cannot be read (the database is down): assume the worst
