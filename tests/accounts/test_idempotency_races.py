"""Callers with one idempotency key at the same moment: the key is looked up under the account's
row lock, so whoever waited for the lock sees what the first caller committed.

Each test holds the account's row from another connection and lets go only once every caller is
waiting for it: a service that looked the key up before taking the lock would have done so by then,
found nothing, and moved the money a second time (or hit the unique constraint, a 500)."""

from decimal import Decimal

import pytest

from accounts.exceptions import IdempotencyConflict
from accounts.models import Account, LedgerEntry, Transfer
from accounts.services import account_deposit, transfer_create
from tests.accounts.invariants import assert_ledger_matches_balances
from tests.factories import account_create, user_create
from tests.helpers import queued_behind_a_lock

pytestmark = pytest.mark.django_db(transaction=True)

HOLD_ACCOUNT = "SELECT 1 FROM accounts_account WHERE id = %s FOR UPDATE"


def balance(account_id: int) -> Decimal:
    return Account.objects.get(pk=account_id).balance


def test_transfers_with_one_key_waiting_on_the_source_lock_move_the_money_once():
    owner = user_create()
    source, target = account_create(owner=owner, balance="50"), account_create(owner=owner)

    def transfer():
        return transfer_create(
            source_id=source.pk, target_id=target.pk, amount="20", idempotency_key="queued"
        )

    results = queued_behind_a_lock(HOLD_ACCOUNT, [source.pk], [transfer] * 3)
    assert all(isinstance(r, Transfer) for r in results), results
    assert len({r.pk for r in results}) == 1
    assert Transfer.objects.count() == 1
    assert (balance(source.pk), balance(target.pk)) == (Decimal("30.00"), Decimal("20.00"))
    assert_ledger_matches_balances()


def test_transfers_with_one_key_and_other_amounts_at_once_are_one_transfer_and_a_conflict():
    owner = user_create()
    source, target = account_create(owner=owner, balance="50"), account_create(owner=owner)

    def transfer(amount):
        return lambda: transfer_create(
            source_id=source.pk, target_id=target.pk, amount=amount, idempotency_key="queued"
        )

    results = queued_behind_a_lock(HOLD_ACCOUNT, [source.pk], [transfer("20"), transfer("25")])
    [done] = [r for r in results if isinstance(r, Transfer)]
    assert [type(r) for r in results if r is not done] == [IdempotencyConflict]
    assert Transfer.objects.get() == done
    assert balance(source.pk) == Decimal("50.00") - done.amount
    assert_ledger_matches_balances()


def test_deposits_with_one_key_waiting_on_the_account_lock_add_the_money_once():
    account = account_create(owner=user_create(), balance="5")

    def deposit():
        return account_deposit(account_id=account.pk, amount="7", idempotency_key="queued")

    results = queued_behind_a_lock(HOLD_ACCOUNT, [account.pk], [deposit] * 3)
    assert all(isinstance(r, LedgerEntry) for r in results), results
    assert len({r.pk for r in results}) == 1
    assert LedgerEntry.objects.filter(idempotency_key="queued").count() == 1
    assert balance(account.pk) == Decimal("12.00")
    assert_ledger_matches_balances()


def test_deposits_with_one_key_and_other_amounts_at_once_are_one_deposit_and_a_conflict():
    account = account_create(owner=user_create(), balance="5")

    def deposit(amount):
        return lambda: account_deposit(
            account_id=account.pk, amount=amount, idempotency_key="queued"
        )

    results = queued_behind_a_lock(HOLD_ACCOUNT, [account.pk], [deposit("7"), deposit("8")])
    [done] = [r for r in results if isinstance(r, LedgerEntry)]
    assert [type(r) for r in results if r is not done] == [IdempotencyConflict]
    assert balance(account.pk) == Decimal("5.00") + done.amount
    assert_ledger_matches_balances()


def test_one_form_sent_at_once_with_other_amounts_tells_the_loser_in_words_not_the_key():
    """Two tabs of one form rendering, sent at once with other amounts: both pass the page's
    check for a used key, then queue on the account; the second gets a sentence, never the key."""
    from django.test import Client

    owner = user_create()
    source, target = account_create(owner=owner, balance="50"), account_create(owner=owner)
    key = "0123456789abcdef0123456789abcdef"

    def send(amount):
        def post():
            client = Client()
            client.force_login(owner)
            data = {"source": source.pk, "target": target.pk, "amount": amount}
            return client.post("/accounts/transfers/new/", data | {"idempotency_key": key})

        return post

    results = queued_behind_a_lock(HOLD_ACCOUNT, [source.pk], [send("20"), send("25")])
    assert sorted(r.status_code for r in results) == [302, 400], results
    refused = next(r for r in results if r.status_code == 400)
    page = refused.content.decode()
    assert "This form was already used for another transfer, so nothing was sent." in page
    assert key not in page.replace(f'value="{key}"', "")  # only in the hidden field
    assert Transfer.objects.count() == 1
    assert_ledger_matches_balances()
