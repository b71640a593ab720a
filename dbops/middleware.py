import functools
import logging

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, get_script_prefix, reverse
from django.utils.cache import add_never_cache_headers
from django.utils.deprecation import MiddlewareMixin
from django.utils.html import format_html, format_html_join

from dbops import metrics, rerun, routing
from dbops.conf import dbops_settings
from dbops.errors import connection_lost, error_text
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


class LivenessMiddleware(SyncAndAsyncMiddleware):
    """``/health/live`` answered here, before any other middleware (second in ``MIDDLEWARE``, after
    the query counter): liveness never depends on the database, for anyone. Further down, the
    session, the user, the debug toolbar (which shows the session) and the login throttle may read
    it; a logged-in person's probe (a session cookie) went through them, and during an outage got
    a 500 from a process that was alive. Probes from an orchestrator would restart it."""

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        return self._live() if self._is_live(request) else self.get_response(request)

    async def __acall__(self, request):
        return self._live() if self._is_live(request) else await self.get_response(request)

    @staticmethod
    def _is_live(request) -> bool:
        if request.method != "GET":
            return False
        # The URLconf of this request (a middleware may set request.urlconf), so a project that
        # routes the health URLs differently per host, or not at all, is asked about its own.
        live = _live_path(getattr(request, "urlconf", None) or settings.ROOT_URLCONF)
        # The URL pattern accepts it with or without the trailing slash (dbops/urls.py).
        return live is not None and request.path_info.rstrip("/") == live

    @staticmethod
    def _live() -> HttpResponse:
        response = HttpResponse("ok\n", content_type="text/plain")
        add_never_cache_headers(response)
        return response


@functools.lru_cache(maxsize=32)
def _live_path(urlconf: str) -> str | None:
    """Where ``urlconf`` routes ``health:live``; None when it does not include dbops.urls (then
    there is nothing to answer early, and every request goes on as if the middleware were not
    there, instead of failing on a NoReverseMatch)."""
    try:
        path = reverse("health:live", urlconf=urlconf)
    except NoReverseMatch:
        return None
    # reverse() puts the script prefix (SCRIPT_NAME: where a proxy mounts the site) in front;
    # request.path_info, which this is compared with, never has it. Cut here, the cached value is
    # the same whatever prefix the first request of the process came with.
    prefix = get_script_prefix()
    if path.startswith(prefix):
        path = "/" + path[len(prefix) :]
    return path.rstrip("/")


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
    """Which server serves this request's reads (``dbops.routing``), and a second run when the
    first failed for its connection: on the replica, or on a connection that broke under a
    statement (a killed backend; a dead server connection PgBouncer handed over), before the
    request sent anything that may write. The second run reads from the primary, on a fresh
    connection. Only requests safe to repeat run again (``dbops.rerun``: safe methods, views
    marked ``@idempotent``); the others are answered 503, "nothing was saved", rather than run
    twice. Last, it keeps a writer's WAL position in the session for read-your-writes.

    Sync and async, like every middleware here. Without a ``replica`` alias it routes nothing, and
    still runs a request again after a broken connection.
    """

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        state, token = routing.request_begin(request)
        try:
            response = self.get_response(request)
            if routing.rerun_needed(state, response.status_code):
                response = self._refusal(request, state) or self.get_response(request)
            routing.remember_writes(state)
        finally:
            routing.request_end(token)
        return response

    async def __acall__(self, request):
        state, token = routing.request_begin(request)
        try:
            response = await self.get_response(request)
            if routing.rerun_needed(state, response.status_code):
                refusal = await sync_to_async(self._refusal)(request, state)
                response = refusal or await self.get_response(request)
            if state.wrote and routing.replica_configured():
                await sync_to_async(routing.remember_writes)(state)
        finally:
            routing.request_end(token)
        return response

    @staticmethod
    def _refusal(request, state):
        """Recover from the failure; None when the request may run again, else the 503 page."""
        allowed = routing.rerun_planned(state)
        failed = routing.recover(state)
        if allowed:
            logger.warning("%s %s: %s; running it again", request.method, request.path, failed)
            return None
        logger.warning(
            "%s %s: %s; not run again (not safe to repeat): 503",
            request.method,
            request.path,
            failed,
        )
        return unavailable_response(request, maybe_applied=False).render()

    def __init__(self, get_response):
        super().__init__(get_response)
        if self.is_async:
            # Django would run a sync process_view in a thread, a hop for every request.
            self.process_view = self._aprocess_view

    def process_view(self, request, view_func, view_args, view_kwargs):
        routing.view_starts(routing.current(), view_func)

    async def _aprocess_view(self, request, view_func, view_args, view_kwargs):
        routing.view_starts(routing.current(), view_func)


def unavailable_response(
    request, *, maybe_applied: bool, check_url: str | None = None
) -> TemplateResponse:
    """The 503 page. It says what is true: nothing was saved (no write was sent), or the request
    may have been carried out (a write was sent, or the session could not be saved after the view
    answered), with a link to where the person can check."""
    response = TemplateResponse(
        request,
        dbops_settings.UNAVAILABLE_TEMPLATE,
        {"maybe_applied": maybe_applied, "check_url": check_url},
        status=503,
    )
    response["Retry-After"] = "5"
    return response


def database_unavailable_response(request, exc: Exception) -> TemplateResponse:
    """503 for a database failure. Logged with its traceback, unless the request is about to run
    again (``ReplicaRoutingMiddleware`` logs that as a warning: a failure the person never sees)."""
    state = routing.current()
    if not routing.rerun_planned(state):
        logger.error("database unavailable: %s", exc.__class__.__name__, exc_info=exc)
    return unavailable_response(request, maybe_applied=bool(state and state.sent_write))


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """A database that is down or overloaded, or a connection lost, is a plain 503 page, never a
    traceback.

    ``MiddlewareMixin`` makes it sync and async: Django calls ``process_exception`` either way."""

    def process_exception(self, request, exception):
        if isinstance(exception, OperationalError | InterfaceError) or connection_lost(exception):
            return database_unavailable_response(request, exception).render()
        return None


class SessionMiddleware(DjangoSessionMiddleware):
    """Django's ``SessionMiddleware``, except when the session's save fails on a lost connection.

    The save runs after the view has answered, so whatever the view did is done: a transfer has
    committed. Django answers that failure with ``SessionInterrupted``, a 400 whose page says
    nothing was done. Here the save is tried once more on a fresh connection (saving a session
    twice is harmless), which keeps the view's own answer and the session's read-your-writes mark;
    if that fails too, the answer is a 503 that says the request may have been carried out and
    links to where to check (the page the view redirected to, or the page itself). A save that
    fails for any other reason (the session was deleted meanwhile) is left to Django.
    """

    def process_response(self, request, response):
        try:
            return super().process_response(request, response)
        except (SessionInterrupted, DatabaseError) as exc:
            if not connection_lost(exc):
                raise
            logger.warning("session save: %s; trying again on a fresh connection", error_text(exc))
        _close_broken_connections()
        try:
            return super().process_response(request, response)
        except (SessionInterrupted, DatabaseError) as exc:
            if not connection_lost(exc):
                raise
            logger.error("session save failed after the view answered", exc_info=exc)
        return unavailable_response(
            request, maybe_applied=True, check_url=_where_to_check(request, response)
        ).render()


def _where_to_check(request, response) -> str | None:
    if response.status_code in (301, 302, 303, 307, 308) and response.has_header("Location"):
        return response["Location"]
    if request.method in rerun.SAFE_METHODS:
        return request.get_full_path()
    return None


def _close_broken_connections() -> None:
    """Close the connections whose psycopg connection is closed, so the next use reconnects."""
    for connection in connections.all(initialized_only=True):
        raw = connection.connection
        if raw is not None and raw.closed and not connection.in_atomic_block:
            connection.close()
