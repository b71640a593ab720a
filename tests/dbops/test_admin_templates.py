"""The pages dbops renders need nothing a project may lack: the backfill run's admin page compiles
without ``django.contrib.humanize`` and groups its figures with dbops's own ``thousands`` filter."""

from __future__ import annotations

from pathlib import Path

import django.contrib.admin
import pytest
from django.template import Context, Engine, Template, TemplateSyntaxError
from django.template.backends.django import get_installed_libraries
from django.urls import reverse

from dbops.models import BackfillRun
from dbops.templatetags.dbops import thousands
from tests.helpers import ROOT

ADMIN_TEMPLATES = Path(django.contrib.admin.__file__).parent / "templates"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (1234567, "1,234,567"),
        ("1234", "1,234"),  # floatformat's output
        (0, "0"),
        ("-1234.5", "-1,234.5"),
        (None, None),
        ("n/a", "n/a"),
    ],
)
def test_thousands_groups_digits_and_leaves_other_values_alone(value, shown):
    assert thousands(value) == shown


def test_thousands_after_floatformat_in_a_template():
    rendered = Template("{% load dbops %}{{ rate|floatformat:0|thousands }}").render(
        Context({"rate": 12345.6})
    )
    assert rendered == "12,346"


def test_the_run_page_compiles_without_django_contrib_humanize():
    """The template and the admin's it extends, compiled with every tag library of the installed
    apps but humanize's: an unknown library or filter fails here. (An engine of its own: taking
    the app out of INSTALLED_APPS would run every app's ready() again for the rest of the run.)"""
    libraries = {
        name: module
        for name, module in get_installed_libraries().items()
        if not module.startswith("django.contrib.humanize")
    }
    assert "humanize" not in libraries and "dbops" in libraries
    engine = Engine(dirs=[ROOT / "dbops" / "templates", ADMIN_TEMPLATES], libraries=libraries)
    engine.get_template("admin/dbops/backfillrun/change_form.html")
    with pytest.raises(TemplateSyntaxError, match="humanize"):
        engine.from_string("{% load humanize %}{{ 1234|intcomma }}")


@pytest.mark.django_db
def test_the_run_page_shows_its_figures_grouped(admin_client):
    run = BackfillRun.objects.create(
        target="dbops_testapp.Item.name_upper",
        options={"expression": "upper(name)", "where": '"name_upper" IS NULL'},
        last_key=["1234567"],
        rows_done=1234567,
        keys_scanned=1234567,
        rows_estimate=2000000,
    )
    page = admin_client.get(reverse("admin:dbops_backfillrun_change", args=[run.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert ">1,234,567</td>" in html
    assert "≈ 765,433 (of ≈ 2,000,000 in the table)" in html
