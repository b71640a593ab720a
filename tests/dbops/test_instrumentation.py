import logging

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dbops.instrumentation import track_queries


@pytest.mark.django_db
def test_track_queries_counts_every_query():
    with track_queries() as stats, connection.cursor() as cursor:
        for _ in range(3):
            cursor.execute("SELECT 1")
    assert stats.count == 3
    assert stats.total_ms > 0


@pytest.mark.django_db
def test_headers_count_the_queries_the_request_ran(client, django_user_model):
    django_user_model.objects.create_user(username="bob", password="pw-bob-123")
    with CaptureQueriesContext(connection) as captured:
        response = client.post("/login/", {"username": "bob", "password": "pw-bob-123"})
    assert response.status_code == 302
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
    settings.DB_SLOW_QUERY_MS = 10_000
    with caplog.at_level(logging.WARNING, logger="dbops.slow_query"):
        with track_queries(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(0.02)")
    assert not [r for r in caplog.records if r.name == "dbops.slow_query"]
