import logging

from django.db import InterfaceError, OperationalError
from django.template.response import TemplateResponse

from dbops.instrumentation import track_queries

logger = logging.getLogger("dbops")


class QueryCountMiddleware:
    """Adds ``X-DB-Query-Count`` and ``X-DB-Query-Time-Ms`` to every response."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with track_queries() as stats:
            response = self.get_response(request)
            # Render lazy responses inside the block, so their template's queries count too.
            if hasattr(response, "render") and not response.is_rendered:
                response.render()
        response.headers["X-DB-Query-Count"] = str(stats.count)
        response.headers["X-DB-Query-Time-Ms"] = f"{stats.total_ms:.1f}"
        return response


def database_unavailable_response(request, exc: Exception) -> TemplateResponse:
    logger.error("database unavailable: %s", exc.__class__.__name__, exc_info=exc)
    response = TemplateResponse(request, "503.html", status=503)
    response["Retry-After"] = "5"
    return response


class DatabaseUnavailableMiddleware:
    """A database that is down or overloaded is a plain 503 page, never a traceback."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, OperationalError | InterfaceError):
            return database_unavailable_response(request, exception).render()
        return None
