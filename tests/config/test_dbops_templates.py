"""The project restyles the toolkit's pages with templates of the same name
(templates/dbops/): what a person sees at /health/ and while the database is down."""

import pytest
from django.db import OperationalError
from django.test import RequestFactory

from dbops.middleware import database_unavailable_response

# Only this project's base.html links its stylesheet: the mark of the project's own templates.
PROJECT_LOOK = b"css/site.css"


def unavailable_page() -> bytes:
    request = RequestFactory().get("/anything/")
    return database_unavailable_response(request, OperationalError("down")).render().content


@pytest.mark.django_db
def test_the_projects_template_of_the_same_name_overrides_dbops_own(client):
    assert PROJECT_LOOK in client.get("/health/").content
    assert PROJECT_LOOK in unavailable_page()
