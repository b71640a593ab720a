"""The pages dbops renders need nothing a project may lack: the backfill run's admin page renders
in a project without ``django.contrib.humanize``, with dbops's own ``thousands`` filter."""

from __future__ import annotations

import pytest
from django.template import Context, Template
from django.urls import reverse

from dbops.models import BackfillRun
from dbops.templatetags.dbops import thousands


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


@pytest.mark.django_db
def test_the_run_page_renders_in_a_project_without_humanize(admin_client, settings):
    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != "django.contrib.humanize"]
    with pytest.raises(Exception, match="humanize"):
        Template("{% load humanize %}").render(Context())  # it really is gone
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
