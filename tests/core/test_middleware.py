"""NUL bytes refused in one place; personal pages never cached; a Content-Security-Policy."""

import re
import subprocess
import sys

import pytest
from django.db import connection

from orders.services import order_place
from tests.factories import account_create, customer_create, product_create, user_create
from tests.helpers import ROOT, database_url

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    client.force_login(user_create(is_staff=True, is_superuser=True))
    return client


def table_writes() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)"
            " FROM pg_stat_xact_user_tables WHERE relname <> 'django_session'"
        )
        return cursor.fetchone()[0]


@pytest.mark.parametrize(
    "method, path, data, headers",
    [
        # The two places the issue found (DataError: text cannot contain NUL), then the rest.
        ("GET", "/admin/orders/customer/?region__exact=%00", None, {}),
        (
            "GET",
            "/admin/autocomplete/?app_label=orders&model_name=order&field_name=customer&term=a%00",
            None,
            {},
        ),
        ("GET", "/admin/orders/customer/?q=ab%00c", None, {}),
        ("GET", "/admin/orders/customer/%00/change/", None, {}),
        ("GET", "/accounts/transfers/?after=1%00", None, {}),
        ("POST", "/admin/orders/customer/add/", {"name": "x\x00", "email": "a@b.c"}, {}),
        ("POST", "/admin/orders/customer/add/", {"na\x00me": "x"}, {}),
        ("GET", "/admin/", None, {"User-Agent": "evil\x00agent"}),
        ("GET", "/health/ready", None, {"X-Health-Token": "\x00"}),
        # A quoted cookie value may carry a NUL as an octal escape; the session key is looked up.
        ("GET", "/admin/", None, {"Cookie": 'sessionid="abcdefgh\\000ijklmnop"'}),
    ],
    ids=lambda value: None,
)
def test_a_nul_byte_anywhere_in_the_request_is_a_400_that_writes_nothing(
    staff, method, path, data, headers
):
    before = table_writes()
    if method == "GET":
        response = staff.get(path, headers=headers)
    else:
        response = staff.post(path, data, headers=headers)
    assert response.status_code == 400
    assert b"\x00" not in response.content and b"Bad request" in response.content
    assert table_writes() == before


def test_a_nul_byte_is_refused_before_the_session_is_read(client):
    client.cookies["sessionid"] = "x" * 32
    response = client.get("/accounts/?a=%00")
    assert response.status_code == 400
    assert response["X-DB-Query-Count"] == "0"


@pytest.fixture
def person(client):
    user = user_create()
    source = account_create(owner=user, balance="10")
    account_create(owner=user)
    customer = customer_create(user=user)
    order = order_place(customer_id=customer.pk, lines=[(product_create().pk, 1)])
    client.force_login(user)
    return {"account": source.pk, "order": order.pk, "customer": customer.pk}


PERSONAL_PAGES = [
    "/",
    "/accounts/",
    "/accounts/transfers/",
    "/accounts/transfers/new/?key=k",
    "/accounts/{account}/edit/",
    "/orders/",
    "/orders/{order}/",
    "/orders/customers/{customer}/",
    "/orders/new/?key=k",
    "/accounts/999999/edit/",  # a 404 for a logged-in person is personal too
]


@pytest.mark.parametrize("page", PERSONAL_PAGES)
def test_pages_for_a_logged_in_person_are_private_and_never_stored(client, person, page):
    response = client.get(page.format(**person))
    assert response.status_code in (200, 404)
    directives = {d.strip() for d in response["Cache-Control"].split(",")}
    assert {"private", "no-store"} <= directives


def test_a_transfer_posted_by_a_person_is_answered_private(client, person):
    response = client.post("/accounts/transfers/new/", {"amount": "x"})
    assert response.status_code == 400
    assert "no-store" in response["Cache-Control"]


def test_public_pages_for_a_stranger_are_not_marked_private(client):
    response = client.get("/")
    assert "no-store" not in response.get("Cache-Control", "")


def test_health_probes_stay_off_the_session_even_with_a_cookie(client):
    # Already never_cache: the cache middleware leaves them alone and never loads the user.
    client.cookies["sessionid"] = "x" * 32
    response = client.get("/health/live")
    assert response["X-DB-Query-Count"] == "0"


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {
        name: values
        for name, *values in (part.split() for part in header.split(";") if part.strip())
    }


@pytest.mark.parametrize("page", ["/", "/login/", "/accounts/", "/admin/", "/no-such-page/"])
def test_every_page_sends_a_policy_of_this_site_only_with_no_inline_code(staff, page):
    directives = policy(staff.get(page))
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["default-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"] and directives["frame-ancestors"] == ["'none'"]
    assert not any("unsafe" in value for values in directives.values() for value in values)


TOOLBAR_PAGE = """
import re, django
django.setup()
from django.test import Client
response = Client(REMOTE_ADDR="127.0.0.1").get("/login/")
html = response.content.decode()
toolbar = html[html.index('<div id="djDebug'):]
print(response["Content-Security-Policy"])
print("toolbar" if "djDebugToolbar" in toolbar else "no toolbar")
print(len(re.findall(r"<script(?![^>]*\\bsrc=)[^>]*>", toolbar)), "inline scripts")
print(len(re.findall(r"<style\\b|\\sstyle=|\\son[a-z]+=", toolbar)), "inline styles or handlers")
"""


def test_debug_toolbar_works_under_the_policy_in_local_settings():
    """django-debug-toolbar 5+ loads its code as module scripts and stylesheets from STATIC_URL
    ('self'), and sets styles from JS through CSSOM, which style-src does not govern: local
    settings need no 'unsafe-inline' and no nonce for it (checked in Chromium: no violation)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DATABASE_URL": database_url(),
    }
    result = subprocess.run(
        [sys.executable, "-c", TOOLBAR_PAGE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    header, toolbar, scripts, styles = result.stdout.splitlines()
    assert re.search(r"script-src 'self'(;|$)", header) and "unsafe" not in header
    assert toolbar == "toolbar"
    assert (scripts, styles) == ("0 inline scripts", "0 inline styles or handlers")


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize(
    "path, reason",
    [
        ("/accounts/transfers/?after=abc", b"Malformed page cursor."),
        ("/orders/reports/top-customers/?region=Atlantis", b"Unknown region &#x27;Atlantis&#x27;"),
        ("/accounts/?q=a%00b", b"NUL byte in the request&#x27;s query string."),
    ],
)
def test_a_refused_request_is_the_sites_400_page_saying_why_with_debug_on_or_off(
    client, settings, debug, path, reason
):
    settings.DEBUG = debug
    client.force_login(user_create("staffer", is_staff=True))
    response = client.get(path)
    assert response.status_code == 400
    assert "400.html" in [t.name for t in response.templates]
    assert reason in response.content
    assert b"<style" not in response.content and b"<script>" not in response.content
