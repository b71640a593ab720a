import logging

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.db import InterfaceError, OperationalError, connections
from django.template.response import TemplateResponse
from django.utils.deprecation import MiddlewareMixin
from django.utils.html import format_html, format_html_join

from dbops import metrics, routing
from dbops.instrumentation import QueryStats, track_queries

logger = logging.getLogger("dbops")

# Pages show this request's figures in their footer ({% query_stats %}). The footer is rendered
# before the request is over (the session is saved later, on the way out), so it carries this
# marker, and the middleware puts the numbers in once every query has run: the same totals as
# the headers, never a count taken half way.
QUERY_STATS_MARKER = "<!--dbops:query-stats-->"


def query_stats_html(stats: QueryStats) -> str:
    """'4 queries in 3.1 ms', and the count per database alias when there is more than one."""
    text = format_html(
        '<span data-db-query-count="{0}">{0}</span> quer{1} in '
        '<span data-db-query-time-ms="{2}">{2}</span> ms',
        stats.count,
        "y" if stats.count == 1 else "ies",
        f"{stats.total_ms:.1f}",
    )
    aliases = sorted(set(connections.settings) | set(stats.by_alias))
    if len(aliases) > 1:
        counts = ((alias, stats.by_alias.get(alias, [0])[0]) for alias in aliases)
        text += format_html(
            " ({})",
            format_html_join(
                ", ",
                '{}: <span data-db-alias-query-count="{}">{}</span>',
                ((alias, alias, count) for alias, count in counts),
            ),
        )
    return text


def _fill_query_stats(response, stats: QueryStats) -> None:
    if response.streaming or not response.get("Content-Type", "").startswith("text/html"):
        return
    marker = QUERY_STATS_MARKER.encode()
    if marker not in response.content:
        return
    response.content = response.content.replace(marker, query_stats_html(stats).encode(), 1)
    if response.has_header("Content-Length"):
        response["Content-Length"] = str(len(response.content))


def _unrendered(response) -> bool:
    return hasattr(response, "render") and not response.is_rendered


class SyncAndAsyncMiddleware:
    """A middleware native under both WSGI and ASGI: a subclass writes ``__call__`` and
    ``__acall__`` (``__call__`` hands over to it when ``self.is_async``). Under ASGI one sync-only
    middleware makes Django run the rest of the chain, async views included, in a thread per
    request."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)


class QueryCountMiddleware(SyncAndAsyncMiddleware):
    """Adds ``X-DB-Query-Count`` and ``X-DB-Query-Time-Ms`` to every response.

    Sync and async: under ASGI a sync-only middleware would make Django run the rest of the chain,
    async views included, in a thread per request. The count includes the queries the async ORM
    runs in worker threads (``dbops.instrumentation``).
    """

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        with track_queries() as stats:
            response = self.get_response(request)
            # Render lazy responses inside the block, so their template's queries count too.
            if _unrendered(response):
                response.render()
        return self._headers_add(response, stats)

    async def __acall__(self, request):
        with track_queries() as stats:
            response = await self.get_response(request)
            if _unrendered(response):
                await sync_to_async(response.render)()
        return self._headers_add(response, stats)

    @staticmethod
    def _headers_add(response, stats):
        response.headers["X-DB-Query-Count"] = str(stats.count)
        response.headers["X-DB-Query-Time-Ms"] = f"{stats.total_ms:.1f}"
        response.headers["X-DB-Replica-Query-Count"] = str(
            stats.by_alias.get(routing.replica_alias(), [0])[0]
        )
        _fill_query_stats(response, stats)
        metrics.pools_observe()
        return response


class ReplicaRoutingMiddleware(SyncAndAsyncMiddleware):
    """Which server serves this request's reads (``dbops.routing``): opens the request's routing
    state, runs a request that failed on the replica again on the primary (when it had written
    nothing), and keeps a writer's WAL position in the session for read-your-writes.

    Sync and async, like every middleware here. Without a ``replica`` alias it only passes the
    request on.
    """

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        if not routing.replica_configured():
            return self.get_response(request)
        state, token = routing.request_begin(request)
        try:
            response = self.get_response(request)
            if routing.failed_on_replica(state, response.status_code):
                routing.retry_on_primary(state)
                response = self.get_response(request)
            routing.remember_writes(state)
        finally:
            routing.request_end(token)
        return response

    async def __acall__(self, request):
        if not routing.replica_configured():
            return await self.get_response(request)
        state, token = routing.request_begin(request)
        try:
            response = await self.get_response(request)
            if routing.failed_on_replica(state, response.status_code):
                await sync_to_async(routing.retry_on_primary)(state)
                response = await self.get_response(request)
            await sync_to_async(routing.remember_writes)(state)
        finally:
            routing.request_end(token)
        return response


def database_unavailable_response(request, exc: Exception) -> TemplateResponse:
    logger.error("database unavailable: %s", exc.__class__.__name__, exc_info=exc)
    response = TemplateResponse(request, "503.html", status=503)
    response["Retry-After"] = "5"
    return response


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """A database that is down or overloaded is a plain 503 page, never a traceback.

    ``MiddlewareMixin`` makes it sync and async: Django calls ``process_exception`` either way."""

    def process_exception(self, request, exception):
        if isinstance(exception, OperationalError | InterfaceError):
            return database_unavailable_response(request, exception).render()
        return None
