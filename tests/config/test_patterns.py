"""The patterns index and the footer: every pattern of the README's map, with live links."""

import re
from fnmatch import fnmatchcase

import pytest
from django.contrib import admin
from django.urls import get_resolver

from config.patterns import PATTERNS, patterns_for
from tests.factories import user_create
from tests.helpers import ROOT


def readme_map_rows() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Where each pattern lives", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    # Drop the header and the group rows ("| **accounts** | |").
    return [row for row in rows[1:] if not re.match(r"^\| \*\*.*\*\* \| \|$", row.strip())]


def url_names() -> set[str]:
    names = set()

    def walk(resolver, prefix=""):
        for entry in resolver.url_patterns:
            if hasattr(entry, "url_patterns"):
                walk(entry, prefix + (f"{entry.namespace}:" if entry.namespace else ""))
            elif entry.name:
                names.add(prefix + entry.name)

    walk(get_resolver())
    return names


def test_every_row_of_the_readme_map_is_a_pattern_on_the_index():
    rows = readme_map_rows()
    assert len(rows) == len(PATTERNS), "README map rows and config/patterns.py differ in number"
    listed = {path for p in PATTERNS for path in p.files}
    for row in rows:
        where = row.rsplit("|", 2)[-2]
        for path in re.findall(r"`([\w.]+/[\w./]+\.py)", where):
            assert path in listed, f"{path} (README map) is in no entry of config/patterns.py"


def test_every_file_a_pattern_names_exists():
    for pattern in PATTERNS:
        for path in pattern.files:
            assert (ROOT / path).exists(), f"{pattern.slug}: {path} does not exist"


def test_every_live_link_and_page_of_a_pattern_resolves():
    names = url_names()
    for pattern in PATTERNS:
        for live in pattern.live:
            assert bool(live.url_name) != bool(live.command), pattern.slug
            if live.url_name.startswith("admin:"):
                continue  # admin URL names are generated per model: checked below
            assert not live.url_name or live.url_name in names, (pattern.slug, live.url_name)
        for page in pattern.pages:
            if not page.startswith("admin:"):
                assert any(fnmatchcase(name, page) for name in names), (pattern.slug, page)
    admin_names = {
        f"admin:{m._meta.app_label}_{m._meta.model_name}_{view}"
        for m in admin.site._registry
        for view in ("changelist", "change", "add")
    } | {name for name in names if name.startswith("admin:")}  # an admin's own pages too
    for pattern in PATTERNS:
        for page in (*pattern.pages, *(live.url_name for live in pattern.live)):
            if page.startswith("admin:") and page != "admin:index":
                assert any(fnmatchcase(name, page) for name in admin_names), (pattern.slug, page)


def test_pages_find_the_patterns_they_show():
    assert [p.slug for p in patterns_for("accounts:transfer_list")] == ["keyset-pagination"]
    assert "admin-without-n-plus-one" in [
        p.slug for p in patterns_for("admin:orders_order_changelist")
    ]
    assert patterns_for("") == [] and patterns_for("login") == []


@pytest.mark.django_db
def test_the_index_lists_every_pattern_with_an_anchor(client):
    response = client.get("/patterns/")
    assert response.status_code == 200
    for pattern in PATTERNS:
        assert f'id="{pattern.slug}"' in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/patterns/",
        "/accounts/",
        "/accounts/transfers/",
        "/orders/",
        "/orders/new/",
        "/health/",
        "/admin/orders/order/",
    ],
)
def test_the_footer_count_is_the_header_count(client, path):
    client.force_login(user_create(is_staff=True, is_superuser=True))
    response = client.get(path)
    assert response.status_code == 200
    count = re.search(r'data-db-query-count="(\d+)"', response.content.decode())
    assert count and count.group(1) == response["X-DB-Query-Count"]
    assert response["Content-Length"] == str(len(response.content))


@pytest.mark.django_db
def test_the_footer_names_the_page_patterns_and_their_code(client):
    client.force_login(user_create())
    content = client.get("/accounts/transfers/").content.decode()
    assert 'href="/patterns/#keyset-pagination">Keyset pagination</a>' in content
    assert "<code>accounts/selectors.py transfer_list</code>" in content


def test_django_and_axes_admins_are_not_credited_with_the_projects_patterns():
    for view_name in ("admin:auth_user_changelist", "admin:axes_accessattempt_changelist"):
        assert patterns_for(view_name) == [], view_name
    assert patterns_for("admin:accounts_transfer_changelist")


@pytest.mark.django_db
def test_each_page_credits_the_code_it_runs(client):
    client.force_login(user_create("boss", is_staff=True))
    orders = client.get("/orders/").content.decode()
    footer = orders[orders.index('class="site-footer"') :]
    assert "orders/selectors.py order_list" in footer and "transfer_list" not in footer
    accounts = client.get("/accounts/").content.decode()
    footer = accounts[accounts.index('class="site-footer"') :]
    assert "This page shows:" in footer and "Database constraints" in footer


def test_the_makefile_and_the_readme_give_make_bench_the_same_duration():
    makefile = (ROOT / "Makefile").read_text()
    readme = (ROOT / "README.md").read_text()
    in_makefile = re.search(r"^bench:.*\(about (\d+) minutes\)", makefile, re.M).group(1)
    in_readme = re.search(r"`make bench` runs them all \(about (\d+) minutes\)", readme).group(1)
    assert in_makefile == in_readme
