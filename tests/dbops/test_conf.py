"""The toolkit's settings namespace: defaults, the project's values, and the check on both."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from dbops.checks import check_settings
from dbops.conf import DEFAULTS, dbops_settings


def test_a_project_without_dbops_settings_gets_every_default(settings):
    del settings.DBOPS
    # pytest-django's delete sends no setting_changed: forget what earlier tests read.
    dbops_settings.reload()
    assert {name: getattr(dbops_settings, name) for name in DEFAULTS} == DEFAULTS
    assert check_settings() == []


def test_a_project_value_replaces_the_default_and_follows_override(settings):
    settings.DBOPS = {"SLOW_QUERY_MS": 42}
    assert dbops_settings.SLOW_QUERY_MS == 42
    assert dbops_settings.REPLICA_MAX_LAG_MS == DEFAULTS["REPLICA_MAX_LAG_MS"]
    settings.DBOPS = {"SLOW_QUERY_MS": 7}
    assert dbops_settings.SLOW_QUERY_MS == 7


def test_an_unknown_key_is_an_error_naming_it(settings):
    settings.DBOPS = {**settings.DBOPS, "SLOW_QUERY_MSS": 10}
    [error] = check_settings()
    assert error.id == "dbops.E001"
    assert "'SLOW_QUERY_MSS'" in error.msg
    with pytest.raises(SystemCheckError, match="SLOW_QUERY_MSS"):
        call_command("check")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SLOW_QUERY_MS", "500"),
        ("SLOW_QUERY_MS", -1),
        ("HEALTH_FAIL_ON_PENDING_MIGRATIONS", 1),
        ("WEB_CONCURRENCY", True),
        ("PRIMARY_ONLY_APPS", "sessions"),
    ],
)
def test_a_value_of_the_wrong_kind_is_an_error_naming_it(settings, key, value):
    settings.DBOPS = {**settings.DBOPS, key: value}
    [error] = check_settings()
    assert error.id == "dbops.E002"
    assert repr(key) in error.msg


def test_reading_a_name_that_is_not_a_setting_fails_loudly():
    with pytest.raises(AttributeError, match="not a dbops setting"):
        dbops_settings.NO_SUCH_SETTING  # noqa: B018
