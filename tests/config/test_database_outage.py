"""How this project's pages and middleware meet a database that goes away: the toolkit's
middleware in the project's order, the project's pages (local and production settings) answering
503 while liveness stays up."""

import pytest

from tests.factories import user_create
from tests.helpers import gunicorn, http_get


def test_liveness_is_answered_before_any_middleware_that_may_read_the_database(settings):
    """Only the query counter, the request id and (in tests) the N+1 detector come before it:
    below it, the session, the user, the login throttle (and locally the debug toolbar) may read
    the database."""
    above = settings.MIDDLEWARE[: settings.MIDDLEWARE.index("dbops.middleware.LivenessMiddleware")]
    assert above[0] == "dbops.middleware.QueryCountMiddleware"
    assert set(above) <= {
        "dbops.middleware.QueryCountMiddleware",
        "config.request_id.RequestIdMiddleware",
        "zeal.middleware.zeal_middleware",
    }


def _logged_in_cookie() -> str:
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user_create("outage"))
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "DJANGO_SECRET_KEY": "production-settings-in-a-test-" + "x" * 40,
    "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
    "DJANGO_SECURE_SSL_REDIRECT": "false",
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("settings_module", ["local", "production"])
def test_when_the_database_stops_a_logged_in_person_gets_503_pages_and_liveness_stays_up(
    settings_module,
):
    """``make stopdb`` under ``make run`` (local settings: DEBUG, the debug toolbar), and the
    database going away under gunicorn with production settings: for a logged-in person every page
    was a 500 locally, the liveness probe included."""
    from tests.helpers import database_proxy, runserver

    cookie = {"Cookie": _logged_in_cookie()}
    with database_proxy() as proxy:
        server = (
            runserver("config.settings.local", DATABASE_URL=proxy.url)
            if settings_module == "local"
            else gunicorn(DATABASE_URL=proxy.url, **PRODUCTION)
        )
        with server as base:
            assert http_get(base + "/accounts/", headers=cookie)[0] == 200
            proxy.cut()
            for headers in (cookie, {}):
                status, _, body = http_get(base + "/health/live", headers=headers)
                assert (status, body) == (200, b"ok\n")
            # Each page twice: the server logs each outage's traceback (some 10 KiB), and ten of
            # them are more than a pipe holds, were the server's stderr one that nobody reads.
            for path in ("/", "/accounts/", "/orders/?after=abc", "/admin/", "/health/") * 2:
                status, headers, body = http_get(base + path, headers=cookie)
                assert status == 503, (path, body[:300])
                assert b"The database is unavailable" in body and headers["Retry-After"] == "5"
