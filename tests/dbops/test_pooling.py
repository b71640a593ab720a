"""The connection options over one DATABASES entry (``dbops.pooling``): the PgBouncer profile
refuses every option that would prepare named statements on a server connection others share;
``prepared_statements`` really makes the server prepare what a connection runs often. How this
project turns them on (``DB_PGBOUNCER``, ``DB_PREPARE_THRESHOLD``): tests/config."""

from contextlib import contextmanager

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models import F

from dbops.pooling import pgbouncer_profile, prepared_statements
from tests.dbops_testapp.factories import parent_create
from tests.dbops_testapp.models import Child, Parent


def test_pgbouncer_profile_refuses_named_prepared_statements():
    with pytest.raises(ImproperlyConfigured, match="prepared statements"):
        pgbouncer_profile({"OPTIONS": {"prepare_threshold": 2}})
    with pytest.raises(ImproperlyConfigured, match="prepared statements"):
        pgbouncer_profile({"OPTIONS": {"server_side_binding": True}})


@pytest.mark.parametrize(
    "options",
    [{"prepare_threshold": 0}, {"prepare_threshold": 3}, {"server_side_binding": True}],
    ids=["threshold-0", "threshold-3", "server-side-binding"],
)
def test_pgbouncer_profile_refuses_each_prepared_statement_option_on_its_own(options):
    """0 prepares at once: the most prepared statements of all, and falsy (the profile must not
    ask whether the threshold is true)."""
    with pytest.raises(ImproperlyConfigured, match="prepared statements"):
        pgbouncer_profile({"OPTIONS": dict(options)})


@contextmanager
def reopened_with(threshold: int | None):
    """This thread's connection, reopened with ``prepared_statements(entry, threshold)`` applied to
    its entry (any threshold the suite runs with taken out first); restored after."""
    saved = connection.settings_dict["OPTIONS"]
    connection.close()
    entry = {"OPTIONS": {k: v for k, v in saved.items() if k not in PREPARE_OPTIONS}}
    connection.settings_dict["OPTIONS"] = prepared_statements(entry, threshold)["OPTIONS"]
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["OPTIONS"] = saved


PREPARE_OPTIONS = {"server_side_binding", "prepare_threshold"}


def server_prepared() -> list[str]:
    """Statements psycopg prepared on this connection (not SQL-level PREPAREs)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE NOT from_sql")
        return [row[0] for row in cursor.fetchall()]


def take_three_times() -> None:
    parent = parent_create(stock=10)
    for key in ("a", "b", "c"):
        with transaction.atomic():
            Child.objects.create(parent=parent, quantity=1, key=key)
            Parent.objects.filter(pk=parent.pk).update(stock=F("stock") - 1)


@pytest.mark.django_db(transaction=True)
def test_a_threshold_prepares_the_statements_a_connection_runs_that_often():
    with reopened_with(2):
        take_three_times()
        statements = server_prepared()
    for start in ('INSERT INTO "dbops_testapp_child"', 'UPDATE "dbops_testapp_parent"'):
        assert any(sql.startswith(start) for sql in statements), (start, statements)


@pytest.mark.django_db(transaction=True)
def test_no_threshold_prepares_nothing_as_in_django():
    assert prepared_statements({"OPTIONS": {}}, None) == {"OPTIONS": {}}
    with reopened_with(None):
        take_three_times()
        assert server_prepared() == []


def test_a_negative_threshold_is_refused():
    with pytest.raises(ImproperlyConfigured, match="prepare_threshold must be 0 or more"):
        prepared_statements({}, -1)
