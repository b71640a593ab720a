"""The toolkit's tests run against its own test app (tests/dbops_testapp): its URLconf unless a
test names another."""

import pytest

TESTAPP_URLS = "tests.dbops_testapp.urls"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/dbops/" in item.nodeid and item.get_closest_marker("urls") is None:
            item.add_marker(pytest.mark.urls(TESTAPP_URLS))


# What startproject gives: no template directory of the project's, so the toolkit's tests see the
# toolkit's own pages (a project's override of them is the project's to test: tests/config), and
# Django's own error views.
STARTPROJECT_TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]


@pytest.fixture(autouse=True)
def _toolkit_templates(settings):
    settings.TEMPLATES = STARTPROJECT_TEMPLATES
    settings.CSRF_FAILURE_VIEW = "django.views.csrf.csrf_failure"
