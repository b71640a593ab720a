"""A request the app refuses, under ``make run`` (local settings, DEBUG on): the site's own 400
page, styled, saying why, and not one Content-Security-Policy violation. (Django's DEBUG page for
a BadRequest has inline styles and scripts: 70 to 100 violations, an unstyled page.)"""

from tests.browser.conftest import on_server
from tests.helpers import runserver

REFUSED = {
    "/orders/?after=abc": "Malformed page cursor.",
    "/accounts/transfers/?after=1&before=2": "Use either ?after= or ?before=, not both.",
    "/orders/reports/top-customers/?region=Atlantis": "Unknown region 'Atlantis'",
    "/orders/products/?after=x": "Malformed page cursor.",
}


def test_a_refused_request_is_the_sites_400_page_with_no_csp_violation(browser, demo):
    with runserver("config.settings.local") as base:
        dev = on_server(browser, base, demo.user)
        for path, reason in REFUSED.items():
            # check() fails on any console error: a CSP violation is one.
            page = dev.get(path, status=400)
            assert page.text("h1") == "Bad request"
            assert reason in page.text("[data-reason]")
            assert page.find(".site-header").is_displayed()  # the site's page, its navigation
