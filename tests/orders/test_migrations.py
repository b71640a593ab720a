"""The orders app's expand/backfill/contract of ``Customer.email_normalized`` (orders 0002 to
its contract migration): the contract step stops before any lock until the backfill is done."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from dbops.doctor import examine
from dbops.operations import MigrationBlocked
from orders.models import Customer

pytestmark = pytest.mark.django_db(transaction=True)


def constraint(name):
    with connection.cursor() as cursor:
        cursor.execute("SELECT convalidated FROM pg_constraint WHERE conname = %s", [name])
        row = cursor.fetchone()
    return None if row is None else ("valid" if row[0] else "not valid")


def column_nullable(table, column):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT is_nullable FROM information_schema.columns WHERE table_name = %s AND column_name = %s",
            [table, column],
        )
        return cursor.fetchone()[0] == "YES"


def test_contract_migration_stops_before_any_lock_until_the_backfill_is_done(capsys):
    try:
        call_command("migrate", "orders", "0002", verbosity=0)
        assert constraint("customer_email_normalized_unique") is None
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO orders_customer (name, email, region, created_at) VALUES ('Legacy', ' Old@Example.COM ', 'north', now())"
            )
        findings = {f.check: f for f in examine()}
        assert not findings["migrations"].ok

        with pytest.raises(CommandError) as excinfo:
            call_command("migrate", "orders", verbosity=0)
        assert isinstance(excinfo.value.__cause__, MigrationBlocked)
        assert (
            'backfill_column orders.Customer email_normalized --expression "lower(btrim(email))"'
            in str(excinfo.value)
        )
        assert constraint("customer_email_normalized_unique") is None
        assert column_nullable("orders_customer", "email_normalized")

        call_command(
            "backfill_column",
            "orders.Customer",
            "email_normalized",
            "--expression",
            "lower(btrim(email))",
            verbosity=0,
        )
        call_command("migrate", "orders", verbosity=0)
        assert constraint("customer_email_normalized_unique") == "valid"
        assert not column_nullable("orders_customer", "email_normalized")
        assert Customer.objects.get(name="Legacy").email_normalized == "old@example.com"
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE orders_customer SET email_normalized = lower(btrim(email)) WHERE email_normalized IS NULL"
            )
        call_command("migrate", verbosity=0)
