"""Site-wide pages: home, login and logout, favicon, the navigation."""

import pytest

from tests.factories import customer_create, user_create

pytestmark = pytest.mark.django_db


def test_logout_says_so_on_the_login_page(client):
    client.force_login(user_create())
    response = client.post("/logout/", follow=True)
    assert response.redirect_chain[-1][0] == "/login/"
    assert b"You are logged out." in response.content


def test_favicon_is_served(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("favicon.svg")


@pytest.mark.parametrize(
    "staff, customer, shown, hidden",
    [
        (False, False, ["Accounts"], ["Orders", "New order", "Reports", "Admin", "Health"]),
        (False, True, ["Accounts", "Orders", "New order"], ["Reports", "Admin", "Health"]),
        (True, False, ["Orders", "Reports", "Admin", "Health"], ["New order"]),
        (True, True, ["Orders", "New order", "Reports", "Admin", "Health"], []),
    ],
)
def test_navigation_offers_only_pages_the_user_may_open(client, staff, customer, shown, hidden):
    user = user_create(is_staff=staff)
    if customer:
        customer_create(user=user)
    client.force_login(user)
    nav = client.get("/").content.decode().split("<nav", 1)[1].split("</nav>", 1)[0]
    for label in shown:
        assert f">{label}</a>" in nav
    for label in hidden:
        assert f">{label}</a>" not in nav


def test_the_customer_profile_comes_with_the_user_in_one_query(client, django_assert_num_queries):
    user = user_create()
    customer_create(user=user)
    client.force_login(user)
    # The session, then the user with its profile joined; the navigation asks for nothing more.
    with django_assert_num_queries(2):
        assert b">New order</a>" in client.get("/").content


def test_no_template_carries_inline_style_or_script_the_policy_would_block():
    # CONTENT_SECURITY_POLICY allows styles and scripts from 'self' only: an inline one is
    # silently dropped by the browser (the error pages once lost their layout that way).
    import re
    from pathlib import Path

    from django.conf import settings

    inline = re.compile(r'\sstyle="|<style|<script>|\son[a-z]+="')
    offenders = [
        str(path)
        for folder in settings.TEMPLATES[0]["DIRS"]
        for path in Path(folder).rglob("*.html")
        if inline.search(path.read_text())
    ]
    assert offenders == []


def test_error_pages_use_the_site_stylesheet(rf):
    from django.db import OperationalError

    from config.views import server_error
    from dbops.middleware import database_unavailable_response

    request = rf.get("/")
    pages = [
        server_error(request),
        database_unavailable_response(request, OperationalError("gone")).render(),
    ]
    for page in pages:
        assert b"/static/css/site.css" in page.content
