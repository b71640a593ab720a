"""The pages dbops renders come from dbops itself: a project without templates of its own gets
working pages, and a project's template of the same name (or a name in DBOPS) replaces them."""

import pytest
from django.db import OperationalError
from django.test import RequestFactory

from dbops.middleware import database_unavailable_response

# A project with no template directory and no context processors: what startproject gives.
BARE_TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {},
    }
]
# Only this project's base.html links its stylesheet: the mark of the project's own templates.
PROJECT_LOOK = b"css/site.css"


def unavailable_page() -> bytes:
    request = RequestFactory().get("/anything/")
    return database_unavailable_response(request, OperationalError("down")).render().content


@pytest.mark.django_db
def test_the_health_page_stands_alone_without_the_projects_templates(client, settings):
    settings.TEMPLATES = BARE_TEMPLATES
    response = client.get("/health/")
    assert response.status_code == 200
    assert b"<h1>Health: ready</h1>" in response.content
    assert b'href="/health/live"' in response.content
    assert PROJECT_LOOK not in response.content


def test_the_unavailable_page_stands_alone_without_the_projects_templates(settings):
    settings.TEMPLATES = BARE_TEMPLATES
    content = unavailable_page()
    assert b"The database is unavailable" in content
    assert PROJECT_LOOK not in content


def test_a_template_named_in_dbops_settings_replaces_the_page(settings, tmp_path):
    (tmp_path / "down.html").write_text("custom outage page")
    settings.TEMPLATES = [{**BARE_TEMPLATES[0], "DIRS": [tmp_path]}]
    settings.DBOPS = {**settings.DBOPS, "UNAVAILABLE_TEMPLATE": "down.html"}
    assert unavailable_page() == b"custom outage page"
