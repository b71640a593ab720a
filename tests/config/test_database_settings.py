"""The project's database settings (config/database.py, config/settings/): the environment
variables read, checked and applied, and the settings modules that use them."""

import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from config.database import database_settings
from tests.helpers import ROOT

URL = "postgres://app:secret@db.internal:5433/shop"


def build(**env):
    return database_settings({"DATABASE_URL": URL, **env})


def test_defaults_are_persistent_connections_with_health_checks():
    db = build()["default"]
    assert db["HOST"] == "db.internal" and db["PORT"] == 5433 and db["NAME"] == "shop"
    assert db["CONN_MAX_AGE"] == 60
    assert db["CONN_HEALTH_CHECKS"] is True
    assert db["OPTIONS"]["connect_timeout"] == 10
    assert db["OPTIONS"]["options"] == "-c statement_timeout=30000"
    assert "pool" not in db["OPTIONS"]


def test_each_variable_is_read():
    db = build(
        DB_CONN_MAX_AGE="300",
        DB_CONN_HEALTH_CHECKS="false",
        DB_STATEMENT_TIMEOUT_MS="1500",
        DB_CONNECT_TIMEOUT="3",
    )["default"]
    assert db["CONN_MAX_AGE"] == 300
    assert db["CONN_HEALTH_CHECKS"] is False
    assert db["OPTIONS"]["options"] == "-c statement_timeout=1500"
    assert db["OPTIONS"]["connect_timeout"] == 3


def test_pool_forces_conn_max_age_zero():
    db = build(
        DB_POOL="true",
        DB_CONN_MAX_AGE="300",
        DB_POOL_MIN_SIZE="1",
        DB_POOL_MAX_SIZE="8",
        DB_POOL_TIMEOUT="2.5",
    )["default"]
    assert db["CONN_MAX_AGE"] == 0
    assert db["OPTIONS"]["pool"] == {"min_size": 1, "max_size": 8, "timeout": 2.5}


def test_prepared_statements_are_off_by_default_as_in_django():
    options = build()["default"]["OPTIONS"]
    assert "prepare_threshold" not in options and "server_side_binding" not in options


@pytest.mark.parametrize("value, threshold", [("5", 5), ("0", 0), (" 2 ", 2)])
def test_prepare_threshold_turns_on_server_side_binding(value, threshold):
    dbs = build(DB_PREPARE_THRESHOLD=value, DATABASE_REPLICA_URL="postgres://app@replica/shop")
    for alias in ("default", "replica"):
        assert dbs[alias]["OPTIONS"]["prepare_threshold"] == threshold
        assert dbs[alias]["OPTIONS"]["server_side_binding"] is True


def test_url_options_are_kept_next_to_the_timeout():
    db = database_settings(
        {"DATABASE_URL": URL + "?sslmode=require&options=-c%20search_path%3Dapp"}
    )["default"]
    assert db["OPTIONS"]["sslmode"] == "require"
    assert db["OPTIONS"]["options"] == "-c search_path=app -c statement_timeout=30000"


def test_replica_url_adds_a_mirrored_alias():
    dbs = build(DATABASE_REPLICA_URL="postgres://app@replica:5432/shop")
    assert dbs["replica"]["HOST"] == "replica"
    assert dbs["replica"]["TEST"] == {"MIRROR": "default"}


def test_embedded_server_used_only_when_database_url_is_unset():
    calls = []

    def embedded():
        calls.append(1)
        return "postgres://postgres@%2Ftmp%2Fpg/app"

    assert (
        database_settings({"DATABASE_URL": URL}, embedded_url=embedded)["default"]["NAME"] == "shop"
    )
    assert calls == []
    assert database_settings({}, embedded_url=embedded)["default"]["HOST"] == "/tmp/pg"
    assert calls == [1]


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("DB_CONN_MAX_AGE", "sixty", "DB_CONN_MAX_AGE='sixty' is not a whole number"),
        ("DB_CONN_MAX_AGE", "-1", "DB_CONN_MAX_AGE='-1' must be at least 0"),
        ("DB_CONN_HEALTH_CHECKS", "maybe", "DB_CONN_HEALTH_CHECKS='maybe' is not a boolean"),
        ("DB_POOL", "ture", "DB_POOL='ture' is not a boolean"),
        ("DB_STATEMENT_TIMEOUT_MS", "1.5", "DB_STATEMENT_TIMEOUT_MS='1.5' is not a whole number"),
        ("DB_CONNECT_TIMEOUT", "0", "DB_CONNECT_TIMEOUT='0' must be at least 1"),
        ("DB_PREPARE_THRESHOLD", "yes", "DB_PREPARE_THRESHOLD='yes' is not a whole number"),
        ("DB_PREPARE_THRESHOLD", "-1", "DB_PREPARE_THRESHOLD='-1' must be at least 0"),
        ("DATABASE_URL", "mysql://u@h/db", "DATABASE_URL must be a postgres:// URL"),
        ("DATABASE_URL", "nonsense://x", "DATABASE_URL is not a valid database URL"),
        (
            "DATABASE_REPLICA_URL",
            "sqlite:///x.db",
            "DATABASE_REPLICA_URL must be a postgres:// URL",
        ),
    ],
)
def test_malformed_value_names_the_variable(variable, value, message):
    with pytest.raises(ImproperlyConfigured, match=message.replace("(", r"\(").replace(".", r"\.")):
        database_settings({"DATABASE_URL": URL, variable: value})


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"DB_POOL_MIN_SIZE": "5", "DB_POOL_MAX_SIZE": "2"},
            "DB_POOL_MIN_SIZE=5 is larger than DB_POOL_MAX_SIZE=2",
        ),
        ({"DB_POOL_MAX_SIZE": "0"}, "DB_POOL_MAX_SIZE='0' must be at least 1"),
        ({"DB_POOL_TIMEOUT": "soon"}, "DB_POOL_TIMEOUT='soon' is not a number"),
        ({"DB_POOL_TIMEOUT": "nan"}, "DB_POOL_TIMEOUT='nan' is not a finite number"),
    ],
)
def test_malformed_pool_value_names_the_variable(env, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        build(DB_POOL="true", **env)


def test_bad_value_stops_manage_py_at_start_naming_the_variable():
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DB_SLOW_QUERY_MS": "fast", "DATABASE_URL": URL},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "DB_SLOW_QUERY_MS='fast' is not a whole number" in result.stderr


@pytest.mark.django_db
def test_statement_timeout_is_applied_to_the_connection():
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "30s"
        cursor.execute("SELECT current_setting('application_name')")
        assert cursor.fetchone()[0] == "django-pg-patterns"


def test_production_settings_pass_check_deploy_and_require_secrets():
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": URL,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
    }
    command = [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"]
    missing = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0
    assert "Set the DJANGO_SECRET_KEY environment variable" in missing.stderr
    env.update(
        DJANGO_SECRET_KEY="k" * 20 + "-Zq8_x2!vT0pLm#4rW9s" * 3,
        DJANGO_ALLOWED_HOSTS="shop.example.com",
    )
    deploy = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert deploy.returncode == 0, deploy.stderr
    assert "no issues" in deploy.stdout


@pytest.mark.parametrize(
    "module, present", [("local", True), ("test", False), ("production", False)]
)
def test_debug_toolbar_only_in_local_settings(module, present):
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": URL,
        "DJANGO_SETTINGS_MODULE": f"config.settings.{module}",
        "DJANGO_SECRET_KEY": "k" * 50,
        "DJANGO_ALLOWED_HOSTS": "shop.example.com",
    }
    code = "from django.conf import settings as s; print('debug_toolbar' in s.INSTALLED_APPS, any('debug_toolbar' in m for m in s.MIDDLEWARE))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.split() == [str(present), str(present)], result.stderr


def test_production_refuses_to_start_without_database_url():
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": "k" * 50,
        "DJANGO_ALLOWED_HOSTS": "shop.example.com",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Set the DATABASE_URL environment variable" in result.stderr


def test_embedded_replica_is_used_only_with_the_embedded_primary():
    def primary():
        return "postgres://postgres@%2Ftmp%2Fp:5432/app"

    def standby():
        return "postgres://postgres@%2Ftmp%2Fr:5433/app"

    dbs = database_settings({}, embedded_url=primary, embedded_replica_url=standby)
    assert dbs["replica"]["HOST"] == "/tmp/r" and dbs["replica"]["PORT"] == 5433
    # A server named by DATABASE_URL gets no embedded standby.
    assert "replica" not in database_settings({"DATABASE_URL": URL}, embedded_replica_url=standby)
    # DATABASE_REPLICA_URL wins over the embedded one.
    dbs = database_settings(
        {"DATABASE_REPLICA_URL": URL}, embedded_url=primary, embedded_replica_url=standby
    )
    assert dbs["replica"]["HOST"] == "db.internal"


def test_replica_lag_ceiling_is_read_and_checked():
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; print(settings.DBOPS['REPLICA_MAX_LAG_MS'])",
        ],
        cwd=ROOT,
        env={
            **__import__("os").environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DB_REPLICA_MAX_LAG_MS": "750",
            "DATABASE_URL": URL,
        },
        capture_output=True,
        text=True,
    )
    assert run.stdout.strip() == "750", run.stderr


def test_pgbouncer_profile_keeps_no_session_state():
    db = build(DB_PGBOUNCER="true")["default"]
    assert db["DISABLE_SERVER_SIDE_CURSORS"] is True and db["PGBOUNCER"] is True
    # PgBouncer refuses the options startup parameter; statement_timeout goes on the role.
    assert "options" not in db["OPTIONS"]
    assert "prepare_threshold" not in db["OPTIONS"]  # Django's default: no prepared statements
    assert db["CONN_MAX_AGE"] == 60
    plain = build()["default"]
    assert "PGBOUNCER" not in plain and not plain.get("DISABLE_SERVER_SIDE_CURSORS")


def test_pgbouncer_variable_must_be_a_boolean():
    with pytest.raises(ImproperlyConfigured, match="DB_PGBOUNCER='maybe' is not a boolean"):
        build(DB_PGBOUNCER="maybe")


def test_pgbouncer_with_a_prepare_threshold_stops_at_start_naming_both_variables():
    with pytest.raises(ImproperlyConfigured, match="DB_PGBOUNCER=true with DB_PREPARE_THRESHOLD"):
        build(DB_PGBOUNCER="true", DB_PREPARE_THRESHOLD="5")
    assert "prepare_threshold" in build(DB_PREPARE_THRESHOLD="5")["default"]["OPTIONS"]


@pytest.mark.parametrize("threshold", ["0", "1", "5"])
def test_pgbouncer_with_any_prepare_threshold_zero_included_stops_at_start(threshold):
    with pytest.raises(ImproperlyConfigured, match="DB_PGBOUNCER=true with DB_PREPARE_THRESHOLD"):
        build(DB_PGBOUNCER="true", DB_PREPARE_THRESHOLD=threshold)
