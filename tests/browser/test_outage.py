"""The database goes away under ``make run`` (local settings: DEBUG and the debug toolbar) while a
person is logged in: liveness still answers, every page is the plain 503 page."""

from tests.browser.conftest import on_server
from tests.helpers import database_proxy, runserver


def test_a_logged_in_person_gets_the_plain_503_page_when_the_database_stops(browser, demo):
    with (
        database_proxy() as proxy,
        runserver("config.settings.local", DATABASE_URL=proxy.url) as base,
    ):
        dev = on_server(browser, base, demo.user)
        assert demo.username in dev.get("/accounts/").text(".site-header")

        proxy.cut()  # as `make stopdb` would
        assert dev.get("/health/live", footer=False).text() == "ok"
        for path in ("/accounts/", "/orders/", "/"):
            page = dev.get(path, status=503, footer=False)
            assert "The database is unavailable" in page.text("h1")
            assert page.header("Retry-After") == "5"
            # Styled by the site's stylesheet (no inline style: the CSP allows none).
            card = page.find(".card")
            assert card.value_of_css_property("background-color") == "rgba(255, 255, 255, 1)"
