"""The browser group: Debian's Chromium driven by Selenium through Debian's chromedriver.

One browser for the whole session (a fresh profile), the app served by pytest-django's
``live_server``. Every page a test opens is checked the same way: the document's status, no
console error, no failed request, and the footer's query count equal to the X-DB-Query-Count
header. A failing test leaves a screenshot in tests/browser/failures/ and prints its path.
Without Chromium the group is skipped locally, naming the packages; under CI=true it fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PACKAGES = "Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
FAILURES = Path(__file__).parent / "failures"
HERE = Path(__file__).parent
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--force-device-scale-factor=1",
    "--hide-scrollbars",
]
DESKTOP = (1280, 900)


def missing() -> str:
    """What is missing to run the group, or ''."""
    absent = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if importlib.util.find_spec("selenium") is None:
        absent.append("the selenium package (pip install -e '.[dev]')")
    return ", ".join(absent)


def pytest_collection_modifyitems(config, items):
    mine = [item for item in items if HERE in item.path.parents]
    for item in mine:
        item.add_marker(pytest.mark.browser)
    absent = missing()
    if absent and os.environ.get("CI") != "true":
        skip = pytest.mark.skip(reason=f"browser tests need {PACKAGES}; missing: {absent}")
        for item in mine:
            item.add_marker(skip)


class PageError(AssertionError):
    pass


class Browser:
    """A Chromium window on the live server, with the checks every page gets."""

    def __init__(self, driver, base_url: str):
        self.driver = driver
        self.base_url = base_url.rstrip("/")
        self.document: dict = {}

    # -- navigation ----------------------------------------------------------------------
    def get(self, path: str, *, status: int = 200, footer: bool = True) -> Browser:
        self._drain()
        self.driver.get(self.base_url + path)
        return self.check(status=status, footer=footer)

    def submit(self, element, *, status: int = 200, footer: bool = True) -> Browser:
        """Click a button that loads a new page; wait for it and check it."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        self._drain()
        # Mark the window, not an element: a reference to the old <html> can fail in several
        # ways while the next document replaces it ("stale element", "node does not belong
        # to the document"), but a new document always starts without the mark.
        self.driver.execute_script("window.__leaving = true")
        element.click()
        WebDriverWait(self.driver, 15, ignored_exceptions=(WebDriverException,)).until(
            lambda d: d.execute_script(
                "return window.__leaving === undefined && document.readyState === 'complete'"
            )
        )
        return self.check(status=status, footer=footer)

    def back(self, *, status: int = 200, footer: bool = True) -> Browser:
        """The browser's Back button; wait for the page it shows and check it. A page served
        from the back/forward cache (no request) keeps its window: then only the address changes."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        self._drain()
        leaving = self.driver.current_url
        self.driver.execute_script("window.__leaving = true")
        self.driver.back()
        WebDriverWait(self.driver, 15, ignored_exceptions=(WebDriverException,)).until(
            lambda d: (
                d.current_url != leaving
                and d.execute_script("return document.readyState === 'complete'")
            )
        )
        restored = self.driver.execute_script("return window.__leaving === true")
        return self if restored else self.check(status=status, footer=footer)

    # -- the checks ----------------------------------------------------------------------
    def _drain(self) -> None:
        self.driver.get_log("browser")
        self.driver.get_log("performance")

    def check(self, *, status: int = 200, footer: bool = True) -> Browser:
        """The page just loaded: its status, no failed request, no console error, and the
        footer's query count equal to the X-DB-Query-Count header."""
        events = self._events()
        documents = [
            e["params"]["response"]
            for e in events
            if e["method"] == "Network.responseReceived" and e["params"].get("type") == "Document"
        ]
        if not documents:
            raise PageError(f"no document loaded at {self.driver.current_url}")
        self.document = documents[-1]
        url = self.document["url"]
        if self.document["status"] != status:
            raise PageError(f"{url}: status {self.document['status']}, expected {status}")
        self._no_errors(events, expected=(url if status >= 400 else None))
        if footer:
            header = self.header("X-DB-Query-Count")
            shown = self.footer_query_count()
            if header is None or shown != int(header):
                raise PageError(f"{url}: footer says {shown} queries, X-DB-Query-Count {header}")
        return self

    def check_requests(self) -> Browser:
        """After something in the page (a script's fetch): no failed request, no console error."""
        self._no_errors(self._events(), expected=None)
        return self

    def _events(self) -> list[dict]:
        return [json.loads(e["message"])["message"] for e in self.driver.get_log("performance")]

    def _no_errors(self, events: list[dict], *, expected: str | None) -> None:
        where = self.driver.current_url
        failed = [
            f"{e['params']['response']['status']} {e['params']['response']['url']}"
            for e in events
            if e["method"] == "Network.responseReceived"
            and e["params"]["response"]["status"] >= 400
            and e["params"]["response"]["url"] != expected
        ]
        failed += [
            f"{e['params'].get('errorText')} (request {e['params'].get('requestId')})"
            for e in events
            if e["method"] == "Network.loadingFailed" and not e["params"].get("canceled")
        ]
        if failed:
            raise PageError(f"{where}: failed requests: {failed}")
        # The document's own error status is what the test asked for; anything else logged
        # against it (a Content-Security-Policy violation, a script error) is not.
        own_status = f"{expected} - Failed to load resource: the server responded with a status"
        console = [
            entry["message"]
            for entry in self.driver.get_log("browser")
            if entry["level"] == "SEVERE"
            and not (expected and entry["message"].startswith(own_status))
        ]
        if console:
            raise PageError(f"{where}: console errors: {console}")

    def header(self, name: str) -> str | None:
        headers = {k.lower(): v for k, v in self.document.get("headers", {}).items()}
        return headers.get(name.lower())

    def footer_query_count(self) -> int:
        element = self.driver.find_element("css selector", "[data-db-query-count]")
        return int(element.get_attribute("data-db-query-count"))

    # -- helpers -------------------------------------------------------------------------
    def find(self, css: str):
        return self.driver.find_element("css selector", css)

    def find_all(self, css: str):
        return self.driver.find_elements("css selector", css)

    def text(self, css: str = "body") -> str:
        return self.find(css).text

    def forget(self) -> None:
        """Log out everywhere: every cookie of every site this browser visited."""
        self.driver.execute_cdp_cmd("Network.clearBrowserCookies", {})

    def login(self, username: str, password: str) -> Browser:
        self.forget()
        self.get("/login/")
        self.find("#id_username").send_keys(username)
        self.find("#id_password").send_keys(password)
        return self.submit(self.find("form button[type=submit]"))

    def logout(self) -> Browser:
        return self.submit(self.find(".site-header form button"))

    def resize(self, width: int, height: int = 900) -> None:
        self.driver.set_window_size(width, height)
        # The window's frame takes nothing in headless mode; make sure of the viewport's width.
        inner = self.driver.execute_script("return window.innerWidth")
        if inner != width:
            self.driver.set_window_size(width + (width - inner), height)

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        return path


def on_server(browser: Browser, base: str, user=None) -> Browser:
    """The session's browser on another server (``runserver`` with local settings, say) against
    the test database, logged in as ``user`` through a session made here: the test settings'
    password hasher is not one the local settings accept, and the session table is shared."""
    from django.conf import settings
    from django.test import Client

    other = Browser(browser.driver, base)
    other.get("/health/live", footer=False)  # a page of that origin, to set its cookie on
    if user is not None:
        client = Client()
        client.force_login(user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
        other.driver.add_cookie({"name": settings.SESSION_COOKIE_NAME, "value": cookie})
    return other


def chromium(*, width: int = DESKTOP[0], height: int = DESKTOP[1]):
    """A new headless Chromium with a fresh profile (its own cookies: a separate "context")."""
    absent = missing()
    if absent:
        pytest.fail(f"browser tests must run under CI=true; install {PACKAGES}; missing: {absent}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # The driver from the same Debian package as the browser: versions always match, and
    # Selenium never tries to download one.
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    driver._profile_dir = profile
    return driver


def chromium_quit(driver) -> None:
    driver.quit()
    shutil.rmtree(driver._profile_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def _driver():
    driver = chromium()
    yield driver
    chromium_quit(driver)


@pytest.fixture
def browser(_driver, live_server) -> Iterator[Browser]:
    """The session's browser, on the live server, starting logged out at desktop width."""
    browser = Browser(_driver, live_server.url)
    browser.forget()
    _driver.set_window_size(*DESKTOP)
    yield browser


@pytest.fixture
def second_browser(live_server) -> Iterator[Browser]:
    """Another browser with a profile of its own: a second person, or the same in another browser."""
    driver = chromium()
    yield Browser(driver, live_server.url)
    chromium_quit(driver)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for name in ("browser", "second_browser", "dev_browser"):
        browser = item.funcargs.get(name) if hasattr(item, "funcargs") else None
        if isinstance(browser, Browser):
            try:
                path = browser.screenshot(FAILURES / f"{item.name}-{name}.png")
            except Exception as exc:  # noqa: BLE001 (a screenshot must not hide the failure)
                report.sections.append(("screenshot", f"could not save a screenshot: {exc}"))
            else:
                report.sections.append(("screenshot", f"{name}: {path}"))
                sys.stderr.write(f"\nscreenshot of the failed page: {path}\n")


@pytest.fixture
def demo(transactional_db):
    """The demo data set, small: the demo login (staff, with a customer profile and three
    accounts), a few other people, products, customers, 60 orders and enough transfers for
    two pages of history."""
    from decimal import Decimal
    from types import SimpleNamespace

    from django.contrib.auth import get_user_model

    from accounts.demo import accounts_seed
    from accounts.models import Account
    from accounts.services import account_deposit, transfer_create
    from core.demo import DEMO_PASSWORD, DEMO_USERNAME, PEOPLE_PASSWORD
    from orders.demo import customers_seed, orders_seed, products_seed

    accounts_seed(accounts=8)
    user = get_user_model().objects.get(username=DEMO_USERNAME)
    products_seed(12)
    customers_seed(10, demo_user=user)
    orders_seed(60)
    main, savings = Account.objects.filter(owner=user, currency="EUR").order_by("pk")[:2]
    theirs = Account.objects.filter(currency="EUR").exclude(owner=user).order_by("pk").first()
    for account in (main, theirs):
        account_deposit(account_id=account.pk, amount=Decimal("5000"))
    moves = [(main, savings, "savings"), (main, theirs, "rent"), (theirs, main, "refund")]
    for n in range(30):
        source, target, memo = moves[n % 3]
        transfer_create(
            source_id=source.pk, target_id=target.pk, amount=f"{12 + n * 7.5:.2f}", memo=memo
        )
    return SimpleNamespace(
        username=DEMO_USERNAME,
        password=DEMO_PASSWORD,
        user=user,
        accounts=(main, savings),
        person="person0001",
        person_password=PEOPLE_PASSWORD,
    )
