import hmac

from django.db import DatabaseError
from django.http import Http404, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from dbops import metrics
from dbops.conf import dbops_settings
from dbops.health import readiness

HEALTH_TOKEN_HEADER = "X-Health-Token"
# "replica" and "cache" are "ok" or "degraded"; their reasons (which may name hosts) are details.
PUBLIC_FIELDS = ("status", "reason", "replica", "cache")

DEV_SERVER_NOTE = (
    "Development server: runserver handles each browser connection in a thread of its own, and "
    "database connections belong to a thread, so every new browser connection opens a new "
    "database connection, which Django closes when the browser connection ends. CONN_MAX_AGE "
    "reuse across requests shows only under a real server (gunicorn, uvicorn), where "
    "connection_age_s keeps growing from one request to the next."
)


def dev_server_note(request) -> str:
    """What connection reuse really looks like under ``runserver`` (wsgiref's ``WSGIServer``)."""
    return (
        DEV_SERVER_NOTE if request.META.get("SERVER_SOFTWARE", "").startswith("WSGIServer/") else ""
    )


@never_cache
@require_GET
def live(request):
    """The process answers; the database is not touched."""
    return HttpResponse("ok\n", content_type="text/plain")


def token_given(request) -> str | None:
    """The token a probe sends: ``X-Health-Token: T`` or ``Authorization: Bearer T`` (what
    Prometheus's ``authorization`` setting sends)."""
    given = request.headers.get(HEALTH_TOKEN_HEADER)
    if given is not None:
        return given
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def token_valid(request) -> bool:
    token, given = dbops_settings.HEALTH_TOKEN, token_given(request)
    # Bytes: compare_digest takes str only when ASCII, and a header may be anything.
    return bool(
        token
        and given is not None
        and hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode())
    )


def may_see_details(request) -> bool:
    """Staff, or a probe sending the configured ``DBOPS["HEALTH_TOKEN"]`` in ``X-Health-Token``
    or as ``Authorization: Bearer``."""
    if token_valid(request):
        return True
    try:
        user = getattr(request, "user", None)
        return bool(user is not None and user.is_active and user.is_staff)
    except DatabaseError:
        return False  # the session cannot be read: answer as to a stranger


@never_cache
@require_GET
def ready(request):
    """200 when the database answers, 503 with the reason when not. Strangers get the status and
    the reason only; the version, pids and connection details are for staff and token holders."""
    ok, report = readiness()
    metrics.health_observe("ready", ok)
    note = dev_server_note(request)
    if note and "connections" in report.get("database", {}):
        report["database"]["connections"]["note"] = note
    if not may_see_details(request):
        report = {key: report[key] for key in PUBLIC_FIELDS if key in report}
    return JsonResponse(report, status=200 if ok else 503)


@never_cache
@require_GET
def status(request):
    """/health/ready for people: the same checks as a page; the details for staff only."""
    ok, report = readiness()
    metrics.health_observe("status", ok)
    return render(
        request,
        dbops_settings.HEALTH_STATUS_TEMPLATE,
        {
            "ok": ok,
            "report": report,
            "details": may_see_details(request),
            "dev_server_note": dev_server_note(request),
        },
        status=200 if ok else 503,
    )


def _logged_in(request) -> bool:
    try:
        user = getattr(request, "user", None)
        return bool(user is not None and user.is_authenticated)
    except DatabaseError:
        return False


@never_cache
@require_GET
def metrics_view(request):
    """Prometheus text format, for staff and for scrapers sending the health token (as
    ``Authorization: Bearer`` or ``X-Health-Token``). No credentials, or a wrong token: 401 with
    the challenge; a logged-in person who is not staff: 403. Never an error page: series read from
    a database that does not answer are left out (``dbops_database_up 0``)."""
    if not dbops_settings.METRICS_ENABLED:
        raise Http404("metrics are off (DBOPS['METRICS_ENABLED'])")
    if not may_see_details(request):
        if _logged_in(request) and token_given(request) is None:
            return HttpResponseForbidden("staff only\n", content_type="text/plain")
        response = HttpResponse("a health token is needed\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics.exposition(), content_type=metrics.CONTENT_TYPE)
