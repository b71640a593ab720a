import json
import subprocess
import sys

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.http import HttpResponse
from django.urls import path

from devdb import embedded
from tests.dbops_testapp.factories import person_create
from tests.helpers import ROOT, gunicorn, http_get, http_json, subprocess_env, wsgi_request


def test_live_answers_without_touching_the_database(client):
    # No django_db mark: any database access in this test raises.
    response = client.get("/health/live")
    assert response.status_code == 200
    assert response["X-DB-Query-Count"] == "0"


HEALTH_TOKEN = "probe-token-7f3a"
PUBLIC = {"status"}


@pytest.fixture
def token(settings):
    settings.DBOPS = {**settings.DBOPS, "HEALTH_TOKEN": HEALTH_TOKEN}
    return HEALTH_TOKEN


@pytest.mark.django_db
def test_ready_shows_a_stranger_the_status_only(client):
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert b"server_version" not in response.content and b"pid" not in response.content


@pytest.mark.django_db
def test_ready_shows_staff_the_latency_version_and_connection(client):
    client.force_login(person_create(is_staff=True))
    response = client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('server_version'), pg_backend_pid()")
        version, pid = cursor.fetchone()
    database = body["database"]
    assert isinstance(database["latency_ms"], float) and database["latency_ms"] < 10_000
    assert database["server_version"] == version
    # The test client serves the request on this very connection: the report names it.
    assert database["connections"]["backend_pid"] == pid
    assert database["connections"]["mode"] == "persistent"
    assert body["unapplied_migrations"] == []
    assert body["invalid_indexes"] == [] and body["not_valid_constraints"] == []


@pytest.mark.django_db
def test_ready_shows_a_logged_in_non_staff_user_the_status_only(client):
    client.force_login(person_create())
    assert client.get("/health/ready").json() == {"status": "ok"}


@pytest.mark.django_db
def test_ready_shows_the_details_to_a_probe_with_the_token(client, token):
    body = client.get("/health/ready", headers={"X-Health-Token": token}).json()
    assert set(body) > PUBLIC and "server_version" in body["database"]


@pytest.mark.django_db
@pytest.mark.parametrize("given", ["wrong", HEALTH_TOKEN + "x", "", "tökén", "\u2603" * 300])
def test_ready_shows_the_status_only_for_a_wrong_token(client, token, given):
    response = client.get("/health/ready", headers={"X-Health-Token": given})
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_ready_shows_the_status_only_when_no_token_is_configured(client, settings):
    settings.DBOPS = {**settings.DBOPS, "HEALTH_TOKEN": ""}
    assert client.get("/health/ready", headers={"X-Health-Token": ""}).json() == {"status": "ok"}


@pytest.fixture
def pending_migration():
    """The test app's newest migration recorded as not applied (rolled back with the test)."""
    (_, latest), *_ = MigrationLoader(connection).graph.leaf_nodes("dbops_testapp")
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM django_migrations WHERE app = 'dbops_testapp' AND name = %s RETURNING name",
            [latest],
        )
        assert cursor.fetchone() is not None
    return f"dbops_testapp.{latest}"


@pytest.mark.django_db
def test_ready_stays_200_with_unapplied_migrations_and_lists_them(client, token, pending_migration):
    response = client.get("/health/ready", headers={"X-Health-Token": token})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and "reason" not in body
    assert body["unapplied_migrations"] == [pending_migration]


@pytest.mark.django_db
def test_ready_is_503_on_unapplied_migrations_when_configured(client, settings, pending_migration):
    settings.DBOPS = {**settings.DBOPS, "HEALTH_FAIL_ON_PENDING_MIGRATIONS": True}
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "reason": "1 unapplied migration(s): run manage.py migrate",
    }


@pytest.mark.django_db(transaction=True)
def test_ready_is_503_with_a_reason_when_the_database_is_unreachable(unreachable_database):
    status, _, body = wsgi_request("/health/ready")
    assert status == 503
    # A stranger learns that the database is unreachable, not where it is.
    assert json.loads(body) == {"status": "unavailable", "reason": "database unreachable"}


@pytest.mark.django_db(transaction=True)
def test_ready_gives_a_token_holder_the_error_when_the_database_is_unreachable(
    unreachable_database, token
):
    status, _, body = wsgi_request("/health/ready", headers={"X-Health-Token": token})
    assert status == 503
    report = json.loads(body)
    assert report["reason"] == "database unreachable"
    assert "127.0.0.1" in report["error"] and "port 1" in report["error"]


@pytest.mark.django_db(transaction=True)
def test_other_pages_are_a_plain_503_when_the_database_is_unreachable(unreachable_database, client):
    # The admin reads the session and the user from the database on every request.
    client.cookies["sessionid"] = "x" * 32
    response = client.get("/admin/")
    assert response.status_code == 503
    assert b"The database is unavailable" in response.content
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
            assert report == {"status": "unavailable", "reason": "database unreachable"}
            # The admin reads the session from the database: a plain 503 page, not a 500.
            status, _, body = http_get(
                base + "/admin/", headers={"Cookie": "sessionid=" + "x" * 32}
            )
            assert status == 503 and b"The database is unavailable" in body

            embedded.start(server.pgdata, port=server.port, listen="127.0.0.1")
            status, report = http_json(base + "/health/ready")
            assert status == 200, report


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/health/ready", "/health/ready/", "/health/live/"])
def test_probes_answer_with_or_without_the_trailing_slash(client, path):
    assert client.get(path).status_code == 200


@pytest.mark.django_db
def test_ready_under_runserver_says_what_really_happens_to_connections(client, token):
    headers = {"X-Health-Token": token}
    body = client.get(
        "/health/ready", SERVER_SOFTWARE="WSGIServer/0.2 CPython/3.11", headers=headers
    ).json()
    assert "new database connection" in body["database"]["connections"]["note"]
    assert (
        "note" not in client.get("/health/ready", headers=headers).json()["database"]["connections"]
    )


@pytest.mark.django_db
def test_health_page_shows_details_to_staff_only(client, django_user_model):
    anonymous = client.get("/health/")
    assert anonymous.status_code == 200 and b"Health: ready" in anonymous.content
    assert b"Server version" not in anonymous.content
    client.force_login(django_user_model.objects.create_user("ops", is_staff=True))
    staff = client.get("/health/")
    assert b"Server version" in staff.content and b"Unapplied migrations" in staff.content


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/health/live", "/health/live/"])
def test_a_logged_in_persons_liveness_probe_touches_no_database(unreachable_database, path):
    from django.test import Client

    client = Client(raise_request_exception=False)
    client.cookies["sessionid"] = "x" * 32  # a session the database would be asked for
    response = client.get(path)
    assert (response.status_code, response.content) == (200, b"ok\n")
    assert response["X-DB-Query-Count"] == "0"
    assert "no-store" in response["Cache-Control"]


@pytest.fixture
def script_prefix_restored():
    from django.urls import set_script_prefix

    yield
    set_script_prefix("/")  # the WSGI handler set the request's; later tests reverse without it


@pytest.mark.django_db(transaction=True)
def test_liveness_is_answered_early_for_a_site_served_under_a_path_prefix(
    unreachable_database, script_prefix_restored
):
    """Behind a proxy that mounts the site at /shop (SCRIPT_NAME), reverse() puts the prefix in
    front of /health/live, which the request's path_info does not have: the probe went down the
    whole chain, to the session and the database. The first request of the process has it."""
    from django.conf import settings

    from dbops.middleware import _live_path

    _live_path.cache_clear()
    cookie = {"Cookie": "sessionid=" + "x" * 32}  # a session the database would be asked for
    status, headers, body = wsgi_request("/health/live", headers=cookie, script_name="/shop")
    assert (status, body) == (200, b"ok\n")
    assert headers["X-DB-Query-Count"] == "0"
    # What the middleware compares path_info with: without the prefix, whoever asked first.
    assert _live_path(settings.ROOT_URLCONF) == "/health/live"


# A URLconf without dbops.urls (a project that routes no health endpoints, or not yet).
urlpatterns = [path("page/", lambda request: HttpResponse("page"))]


@pytest.mark.urls("tests.dbops.test_health")
def test_a_project_that_routes_no_health_urls_still_serves_its_pages(client):
    """The liveness middleware looks up where /health/live is routed: without dbops.urls in the
    URLconf every request failed with NoReverseMatch (a 500 for every page)."""
    assert client.get("/page/").content == b"page"
    assert client.get("/health/live").status_code == 404
