import logging
import threading

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction, sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dbops.instrumentation import track_queries
from dbops.middleware import QueryCountMiddleware


@pytest.mark.django_db
def test_track_queries_counts_every_query():
    with track_queries() as stats, connection.cursor() as cursor:
        for _ in range(3):
            cursor.execute("SELECT 1")
    assert stats.count == 3
    assert stats.total_ms > 0


@pytest.mark.django_db
def test_headers_count_the_queries_the_request_ran(client, django_user_model):
    client.force_login(django_user_model.objects.create_user(username="bob"))
    with CaptureQueriesContext(connection) as captured:
        response = client.post("/parents/1/take/", {"quantity": "1", "key": "k"})
    assert response.status_code == 404  # the session, the user, the parent looked for
    assert int(response["X-DB-Query-Count"]) == len(captured.captured_queries) > 0
    assert float(response["X-DB-Query-Time-Ms"]) > 0


def test_headers_work_with_debug_off(client, settings):
    assert settings.DEBUG is False
    response = client.get("/health/live")
    assert response["X-DB-Query-Count"] == "0"


@pytest.mark.django_db
def test_slow_query_is_logged_with_its_sql(caplog):
    with caplog.at_level(logging.WARNING, logger="dbops.slow_query"):
        with track_queries(slow_ms=50), connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.execute("SELECT pg_sleep(0.08)")
    slow = [r for r in caplog.records if r.name == "dbops.slow_query"]
    assert len(slow) == 1
    assert "SELECT pg_sleep(0.08)" in slow[0].getMessage()
    assert slow[0].duration_ms >= 50


@pytest.mark.django_db
def test_slow_query_threshold_comes_from_settings(settings, caplog):
    settings.DBOPS = {**settings.DBOPS, "SLOW_QUERY_MS": 10_000}
    with caplog.at_level(logging.WARNING, logger="dbops.slow_query"):
        with track_queries(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(0.02)")
    assert not [r for r in caplog.records if r.name == "dbops.slow_query"]


def _page_then_a_late_query(request):
    """A page rendered with the footer marker, then a query on the way out (as a session save
    in an inner middleware would run after the page is rendered)."""
    from django.http import HttpResponse

    from dbops.middleware import QUERY_STATS_MARKER

    response = HttpResponse(f"<footer>{QUERY_STATS_MARKER}</footer>")
    response["Content-Length"] = str(len(response.content))
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return response


@pytest.mark.django_db
def test_the_footer_counts_queries_run_after_the_page_was_rendered(rf):
    from dbops.middleware import QueryCountMiddleware

    response = QueryCountMiddleware(_page_then_a_late_query)(rf.get("/"))
    content = response.content.decode()
    assert response["X-DB-Query-Count"] == "1"
    assert '<span data-db-query-count="1">1</span> query in' in content
    assert f'data-db-query-time-ms="{response["X-DB-Query-Time-Ms"]}"' in content
    assert response["Content-Length"] == str(len(response.content))


@pytest.mark.django_db
def test_a_response_that_is_not_html_keeps_the_marker_untouched(rf):
    from django.http import HttpResponse

    from dbops.middleware import QUERY_STATS_MARKER, QueryCountMiddleware

    def view(request):
        return HttpResponse(QUERY_STATS_MARKER, content_type="text/plain")

    assert QueryCountMiddleware(view)(rf.get("/")).content.decode() == QUERY_STATS_MARKER


@pytest.mark.django_db
def test_query_stats_are_kept_per_database_alias_and_shown_when_there_are_several():
    from dbops.middleware import query_stats_html

    with track_queries() as stats, connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.execute("SELECT 1")
    assert stats.by_alias["default"][0] == 2
    assert "default:" not in query_stats_html(stats)  # one database: no breakdown
    stats.by_alias["replica"] = [3, 1.0]
    stats.count += 3
    html = query_stats_html(stats)
    assert 'data-db-query-count="5"' in html
    assert 'default: <span data-db-alias-query-count="default">2</span>' in html
    assert 'replica: <span data-db-alias-query-count="replica">3</span>' in html


def three_queries_on_this_threads_connection() -> int:
    try:
        with connection.cursor() as cursor:
            for _ in range(3):
                cursor.execute("SELECT 1")
        return threading.get_ident()
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_queries_in_a_worker_thread_of_the_block_are_counted():
    """Under an ASGI server the async ORM runs a request's queries in a worker thread, with that
    thread's own connection object: they count because the worker inherits the block's context."""

    async def tracked():
        with track_queries() as stats:
            worker = await sync_to_async(
                three_queries_on_this_threads_connection, thread_sensitive=False
            )()
        return stats.count, worker

    count, worker = async_to_sync(tracked)()
    assert worker != threading.get_ident()
    assert count == 3


@pytest.mark.django_db(transaction=True)
def test_queries_of_other_contexts_are_not_counted():
    with track_queries() as stats:
        thread = threading.Thread(target=three_queries_on_this_threads_connection)
        thread.start()
        thread.join()
    assert stats.count == 0


@pytest.mark.django_db
def test_nested_blocks_each_count_and_an_open_execute_wrapper_keeps_its_place():
    seen = []

    def spy(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with track_queries() as outer, connection.execute_wrapper(spy), connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        with track_queries() as inner:
            cursor.execute("SELECT 2")
    assert (outer.count, inner.count, seen) == (2, 1, ["SELECT 1", "SELECT 2"])
    assert spy not in connection.execute_wrappers


def test_query_count_middleware_runs_natively_in_both_modes():
    """Sync-only, it would make Django run every async view's request in a thread."""

    async def async_view(request):
        return None

    assert iscoroutinefunction(QueryCountMiddleware(async_view))
    assert not iscoroutinefunction(QueryCountMiddleware(lambda request: None))


@pytest.mark.django_db
def test_without_a_replica_every_response_says_no_query_went_to_one(client):
    response = client.get("/health/ready")
    assert int(response["X-DB-Query-Count"]) > 0
    assert response["X-DB-Replica-Query-Count"] == "0"
