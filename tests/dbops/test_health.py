import json
import subprocess
import sys

import pytest
from django.db import connection

from dbops import embedded
from tests.helpers import ROOT, gunicorn, http_get, http_json, subprocess_env, wsgi_request


def test_live_answers_without_touching_the_database(client):
    # No django_db mark: any database access in this test raises.
    response = client.get("/health/live")
    assert response.status_code == 200
    assert response["X-DB-Query-Count"] == "0"


@pytest.mark.django_db
def test_ready_reports_latency_version_and_reuse(client):
    response = client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["latency_ms"] >= 0
    assert body["database"]["server_version"].split(".")[0] in {"15", "16", "17", "18"}
    assert body["database"]["connections"]["mode"] == "persistent"
    assert body["unapplied_migrations"] == []
    assert body["invalid_indexes"] == [] and body["not_valid_constraints"] == []


@pytest.fixture
def unreachable_database():
    """Point the default connection at a port where nothing listens, then put it back."""
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(
        HOST="127.0.0.1", PORT=1, OPTIONS={**saved["OPTIONS"], "connect_timeout": 2}
    )
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


@pytest.mark.django_db(transaction=True)
def test_ready_is_503_with_a_reason_when_the_database_is_unreachable(unreachable_database):
    status, _, body = wsgi_request("/health/ready")
    assert status == 503
    report = json.loads(body)
    assert report["status"] == "unavailable"
    assert report["reason"].startswith("database unreachable:")


@pytest.mark.django_db(transaction=True)
def test_other_pages_are_a_plain_503_when_the_database_is_unreachable(unreachable_database, client):
    # The admin reads the session and the user from the database on every request.
    client.cookies["sessionid"] = "x" * 32
    response = client.get("/admin/")
    assert response.status_code == 503
    assert b"The database is unavailable" in response.content
    assert b"Traceback" not in response.content
    assert response["Retry-After"] == "5"


def test_ready_goes_503_when_the_server_stops_under_a_running_process_and_recovers():
    """gunicorn with persistent connections; the server is stopped, then started again."""
    with embedded.temporary_server(password="s3cret") as server:
        url = server.url(password="s3cret")
        migrate = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input", "-v0"],
            cwd=ROOT,
            env=subprocess_env(DATABASE_URL=url),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert migrate.returncode == 0, migrate.stderr
        with gunicorn(DATABASE_URL=url, DB_CONNECT_TIMEOUT="2") as base:
            assert http_json(base + "/health/ready")[0] == 200

            embedded.stop(server.pgdata)
            status, report = http_json(base + "/health/ready")
            assert status == 503
            assert report["reason"].startswith("database unreachable:")
            status, _, body = http_get(base + "/admin/login/?next=/admin/")
            assert status in (200, 503)  # the login page itself may not need the database
            assert b"Traceback" not in body

            embedded.start(server.pgdata, port=server.port, listen="127.0.0.1")
            status, report = http_json(base + "/health/ready")
            assert status == 200, report


@pytest.mark.django_db
def test_ready_is_503_when_migrations_are_pending(client, monkeypatch):
    from dbops import catalog

    monkeypatch.setattr(
        catalog, "unapplied_migrations", lambda alias="default": ["orders.9999_new"]
    )
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["reason"] == "1 unapplied migration(s): run manage.py migrate"
