"""The README's worked example (expand, backfill, contract), run as written, and fresh demo data.

Every ``manage.py`` line of the README's walk-through runs here in order, the way a person types
it: it must leave the database as it found it, product descriptions and all (stepping back to
0002 used to unapply 0004 too, dropping every description, and product pages failed meanwhile)."""

import shlex

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from accounts.models import Account, Transfer
from orders.models import Customer, Order, Product
from orders.services import order_place
from tests.accounts.invariants import assert_ledger_matches_balances
from tests.factories import customer_create, product_create, user_create
from tests.helpers import ROOT, run_command

EXPAND = ("orders", "0002_customer_email_normalized_expand")


def readme_walk_through() -> list[list[str]]:
    """The ``manage.py`` commands of the README's walk-through, backslash continuations joined."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Worked example: expand, backfill, contract", 1)[1]
    block = block.split("```sh\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    prefix = ".venv/bin/python manage.py "
    return [
        shlex.split(line[len(prefix) :]) for line in block.splitlines() if line.startswith(prefix)
    ]


@pytest.mark.django_db
def test_stepping_back_to_the_expand_step_unapplies_only_the_contract():
    plan = MigrationExecutor(connection).migration_plan([EXPAND])
    # 0004 (the descriptions) and 0006 (the price raise runs) stay.
    assert [(m.app_label, m.name, backwards) for m, backwards in plan] == [
        ("orders", "0007_merge_email_contract_and_price_raise_runs", True),
        ("orders", "0005_merge_email_contract_and_description", True),
        ("orders", "0003_customer_email_normalized_contract", True),
    ]


@pytest.mark.django_db(transaction=True)
def test_the_readmes_walk_through_runs_as_written_and_keeps_the_descriptions(client):
    product = product_create(description="Hand-finished oak, oiled twice.")
    for _ in range(3):
        customer_create()
    commands = readme_walk_through()
    assert [c[0] for c in commands] == [
        "migrate", "backfill_column", "migrate", "backfill_column", "backfill_column", "migrate",
        "db_doctor",
    ]  # fmt: skip
    try:
        run_command(*commands[0], verbosity=0)  # migrate orders 0002
        assert Product.objects.get(pk=product.pk).description == "Hand-finished oak, oiled twice."
        client.force_login(user_create("visitor"))
        assert client.get(f"/orders/products/{product.pk}/").status_code == 200
        run_command(*commands[1], verbosity=0)  # every email_normalized back to NULL
        with pytest.raises(CommandError, match="still has rows to fill"):
            run_command(*commands[2], verbosity=0)  # the contract refuses
        # The dry run, the (slow) fill, the contract, and db_doctor: nothing needs action.
        for command in commands[3:]:
            run_command(*command, verbosity=0)
    finally:
        call_command("migrate", verbosity=0)
    assert not MigrationExecutor(connection).migration_plan(
        MigrationExecutor(connection).loader.graph.leaf_nodes()
    )
    assert Product.objects.get(pk=product.pk).description == "Hand-finished oak, oiled twice."
    assert Customer.objects.filter(email_normalized__isnull=True).count() == 0
    assert sorted(Customer.objects.values_list("email_normalized", flat=True)) == sorted(
        e.strip().lower() for e in Customer.objects.values_list("email", flat=True)
    )


@pytest.mark.django_db(transaction=True)
def test_seed_demo_reset_starts_over_from_fresh_demo_data():
    sizes = ["--accounts", "6", "--customers", "5", "--products", "4", "--orders", "8"]
    run_command("seed_demo", *sizes, verbosity=0)
    fresh = (Account.objects.count(), Transfer.objects.count(), Order.objects.count())
    # A person plays with it: a new customer, an order, a transfer.
    customer = customer_create()
    order_place(customer_id=customer.pk, lines=[(Product.objects.first().pk, 1)])
    run_command("seed_demo", *sizes, "--reset", "--no-input", verbosity=0)
    assert (Account.objects.count(), Transfer.objects.count(), Order.objects.count()) == fresh
    assert Customer.objects.count() == 5 + 1  # the demo login's own customer profile
    assert Order.objects.order_by("pk").first().pk == 1  # ids start over
    assert_ledger_matches_balances()


@pytest.mark.django_db(transaction=True)
def test_seed_demo_reset_asks_first_and_a_no_deletes_nothing(monkeypatch):
    from django.core.management.base import CommandError

    run_command("seed_demo", "--accounts", "4", "--customers", "2", "--orders", "2", verbosity=0)
    before = Order.objects.count(), Account.objects.count()
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    with pytest.raises(CommandError, match="nothing was deleted"):
        run_command("seed_demo", "--reset", verbosity=0)
    assert (Order.objects.count(), Account.objects.count()) == before
