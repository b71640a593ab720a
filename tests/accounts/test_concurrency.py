"""Real threads, each with its own PostgreSQL connection; the invariants are asserted afterwards."""

import random
import threading
from decimal import Decimal

import pytest
from django.db import DatabaseError

from accounts.exceptions import InsufficientFunds, StaleVersion
from accounts.models import Account, LedgerEntry, Transfer
from accounts.services import account_update, transfer_batch, transfer_create
from tests.accounts.invariants import assert_ledger_matches_balances, total_money
from tests.factories import account_create, user_create
from tests.helpers import in_threads, killed_before

pytestmark = pytest.mark.django_db(transaction=True)


def test_opposite_transfers_from_many_threads_never_deadlock_and_conserve_money():
    owner = user_create()
    accounts = [account_create(owner=owner, balance="100.00") for _ in range(4)]
    ids = [a.pk for a in accounts]
    before = total_money()
    start = threading.Barrier(8)

    def worker(i):
        rng = random.Random(i)
        start.wait()
        done = refused = 0
        for _ in range(25):
            source, target = rng.sample(ids, 2)
            try:
                transfer_create(
                    source_id=source, target_id=target, amount=Decimal(rng.randint(1, 4000)) / 100
                )
                done += 1
            except InsufficientFunds:
                refused += 1
        return done, refused

    results = in_threads(8, worker)
    assert sum(done for done, _ in results) == Transfer.objects.count() > 0
    assert total_money() == before
    assert (
        LedgerEntry.objects.filter(transfer__isnull=False).count() == 2 * Transfer.objects.count()
    )
    assert_ledger_matches_balances()


def test_two_concurrent_calls_with_one_key_make_one_transfer():
    owner = user_create()
    source, target = account_create(owner=owner, balance="50"), account_create(owner=owner)
    start = threading.Barrier(6)

    def submit(i):
        start.wait()
        return transfer_create(
            source_id=source.pk, target_id=target.pk, amount="20", idempotency_key="same"
        ).pk

    ids = in_threads(6, submit)
    assert len(set(ids)) == 1
    assert Transfer.objects.count() == 1
    source.refresh_from_db()
    assert source.balance == Decimal("30.00")
    assert_ledger_matches_balances()


def test_killed_connection_mid_transfer_leaves_nothing_and_a_retry_applies_once():
    owner = user_create()
    source, target = account_create(owner=owner, balance="50"), account_create(owner=owner)

    def transfer():
        return transfer_create(
            source_id=source.pk, target_id=target.pk, amount="20", idempotency_key="retry-me"
        )

    # Killed after both balances were updated, before the ledger entries and the commit.
    error = killed_before('INSERT INTO "accounts_ledgerentry"', transfer)
    assert isinstance(error, DatabaseError)
    assert Transfer.objects.count() == 0
    assert sorted(Account.objects.values_list("balance", flat=True)) == [
        Decimal("0.00"),
        Decimal("50.00"),
    ]

    # The client retries with the same key: applied once, and a further retry changes nothing.
    first, again = transfer(), transfer()
    assert first.pk == again.pk
    assert Transfer.objects.count() == 1
    source.refresh_from_db()
    assert source.balance == Decimal("30.00")
    assert_ledger_matches_balances()


def test_concurrent_batches_over_the_same_accounts_never_deadlock():
    owner = user_create()
    accounts = [account_create(owner=owner, balance="1000.00") for _ in range(4)]
    ids = [a.pk for a in accounts]
    before = total_money()
    start = threading.Barrier(4)

    def batch(i):
        # Each batch walks the accounts in a different order; all lock them up front in id order.
        order = ids if i % 2 else ids[::-1]
        items = [
            {"source_id": a, "target_id": b, "amount": "1.00"}
            for a, b in zip(order, order[1:] + order[:1], strict=True)
        ]
        start.wait()
        results = [transfer_batch(items=items) for _ in range(5)]
        return sum(len(r.succeeded) for r in results), sum(len(r.failed) for r in results)

    outcomes = in_threads(4, batch)
    assert outcomes == [(20, 0)] * 4
    assert Transfer.objects.count() == 80
    assert total_money() == before
    assert_ledger_matches_balances()


def test_two_editors_of_one_account_the_second_gets_stale_version():
    account = account_create(owner=user_create())
    start = threading.Barrier(2)

    def edit(i):
        start.wait()
        try:
            return account_update(
                account_id=account.pk, expected_version=1, name=f"editor {i}"
            ).name
        except StaleVersion as exc:
            return exc

    results = in_threads(2, edit)
    winners = [r for r in results if isinstance(r, str)]
    losers = [r for r in results if isinstance(r, StaleVersion)]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].current.name == winners[0]
    account.refresh_from_db()
    assert (account.name, account.version) == (winners[0], 2)
