"""Services behind a row another transaction keeps locked: they give up after their lock timeout
and retries (``ServiceTransactionFailed``, nothing written), pages answer 409 "busy, try again",
and a service whose row is freed during its retries succeeds."""

from decimal import Decimal

import pytest

from accounts.models import Account, LedgerEntry, Transfer
from accounts.services import account_update, transfer_create
from core.exceptions import BUSY_MESSAGE
from dbops.errors import LOCK_NOT_AVAILABLE
from dbops.transactions import DEFAULT_ATTEMPTS, ServiceTransactionFailed
from tests.accounts.invariants import assert_ledger_matches_balances
from tests.factories import account_create, user_create
from tests.helpers import row_locked

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("short_service_lock_timeout"),
]

BUSY = BUSY_MESSAGE.encode()


@pytest.fixture
def alice(client):
    user = user_create("alice", is_staff=True, is_superuser=True)
    client.force_login(user)
    return user


def test_account_update_gives_up_after_the_lock_timeout_and_changes_nothing():
    account = account_create(name="Old")
    with row_locked(Account, account.pk) as lock, pytest.raises(ServiceTransactionFailed) as busy:
        account_update(account_id=account.pk, expected_version=1, name="New")
    assert lock.retries == [LOCK_NOT_AVAILABLE] * (DEFAULT_ATTEMPTS - 1)
    assert busy.value.sqlstate == LOCK_NOT_AVAILABLE
    assert busy.value.function == "account_update"
    account.refresh_from_db()
    assert (account.name, account.version) == ("Old", 1)


def test_account_update_succeeds_once_the_lock_is_released_during_its_retries():
    account = account_create(name="Old")
    with row_locked(Account, account.pk, release_on_retry=True) as lock:
        updated = account_update(account_id=account.pk, expected_version=1, name="New")
    assert lock.retries == [LOCK_NOT_AVAILABLE]
    assert (updated.name, updated.version) == ("New", 2)
    account.refresh_from_db()
    assert (account.name, account.version) == ("New", 2)


def test_the_edit_page_answers_409_busy_and_keeps_the_account(client, alice):
    account = account_create(owner=alice, name="Old")
    with row_locked(Account, account.pk):
        response = client.post(f"/accounts/{account.pk}/edit/", {"name": "New", "version": 1})
    assert response.status_code == 409
    assert BUSY in response.content
    assert b'value="New"' in response.content  # what the person typed, to send again
    account.refresh_from_db()
    assert (account.name, account.version) == ("Old", 1)
    # Sent again once the row is free: saved.
    assert (
        client.post(f"/accounts/{account.pk}/edit/", {"name": "New", "version": 1}).status_code
        == 302
    )
    account.refresh_from_db()
    assert (account.name, account.version) == ("New", 2)


def test_the_transfer_page_answers_409_busy_moves_nothing_and_the_same_form_sends_once(
    client, alice
):
    source = account_create(owner=alice, balance="100.00")
    target = account_create(owner=alice)
    data = {
        "source": source.pk,
        "target": target.pk,
        "amount": "10.00",
        "memo": "",
        "idempotency_key": "busy-key",
    }
    with row_locked(Account, source.pk):
        response = client.post("/accounts/transfers/new/", data)
    assert response.status_code == 409
    assert BUSY in response.content
    assert (
        Transfer.objects.count(),
        LedgerEntry.objects.filter(transfer__isnull=False).count(),
    ) == (0, 0)
    source.refresh_from_db()
    assert source.balance == Decimal("100.00")
    # The same form, key and all, sent again: the money moves, once.
    assert client.post("/accounts/transfers/new/", data).status_code == 302
    assert client.post("/accounts/transfers/new/", data).status_code == 302
    assert Transfer.objects.count() == 1
    source.refresh_from_db()
    assert source.balance == Decimal("90.00")
    assert_ledger_matches_balances()


def test_a_transfer_behind_a_lock_released_during_its_retries_goes_through():
    owner = user_create()
    source, target = account_create(owner=owner, balance="10"), account_create(owner=owner)
    with row_locked(Account, target.pk, release_on_retry=True) as lock:
        transfer = transfer_create(source_id=source.pk, target_id=target.pk, amount="4")
    assert lock.retries == [LOCK_NOT_AVAILABLE]
    assert Transfer.objects.get() == transfer
    assert_ledger_matches_balances()


def test_the_admin_change_form_says_busy_keeps_the_input_and_saves_nothing(client, alice):
    account = account_create(owner=user_create(), name="Old")
    path = f"/admin/accounts/account/{account.pk}/change/"
    with row_locked(Account, account.pk):
        response = client.post(path, {"name": "Typed", "version": 1})
    assert response.status_code == 409
    page = response.content.decode()
    assert f"Not saved. {BUSY_MESSAGE}" in page
    assert 'value="Typed"' in page
    account.refresh_from_db()
    assert (account.name, account.version) == ("Old", 1)
    # Sent again once the row is free: saved.
    assert client.post(path, {"name": "Typed", "version": 1}).status_code == 302
    account.refresh_from_db()
    assert (account.name, account.version) == ("Typed", 2)
