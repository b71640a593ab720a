"""The debug toolbar's SQL panel on the orders list, under local settings and runserver."""

import re

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import on_server
from tests.helpers import runserver


@pytest.fixture
def dev_browser(browser, demo):
    """The session's browser on ``manage.py runserver`` with local settings (DEBUG, toolbar)."""
    with runserver("config.settings.local") as base:
        yield on_server(browser, base, demo.user)


def test_the_sql_panel_lists_the_queries_the_footer_counts(dev_browser, demo):
    dev_browser.get("/orders/")
    footer = dev_browser.footer_query_count()

    toolbar = dev_browser.find("#djDebugRoot")
    # The toolbar may live in a shadow root of its own (django-debug-toolbar 6+).
    root = dev_browser.driver.execute_script("return arguments[0].shadowRoot", toolbar) or toolbar
    WebDriverWait(dev_browser.driver, 15).until(
        lambda d: root.find_element("css selector", "#djShowToolBarButton").is_displayed()
    )
    root.find_element("css selector", "#djShowToolBarButton").click()
    root.find_element("css selector", "#djdt-SQLPanel a").click()
    legend = WebDriverWait(dev_browser.driver, 15).until(
        lambda d: root.find_elements("css selector", "#SQLPanel .djdt-databaseLegend")
    )[0]
    shown = re.search(r"(\d+) quer", legend.text)
    assert shown and int(shown.group(1)) == footer == int(dev_browser.header("X-DB-Query-Count"))
    statements = root.find_element("css selector", "#SQLPanel table").text
    assert '"orders_order"' in statements and '"orders_orderitem"' in statements
    dev_browser.check_requests()  # the panel's own request: no failure, no console error
