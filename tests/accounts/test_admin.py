import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Account
from accounts.services import account_update, transfer_create
from tests.factories import account_create, user_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    user = user_create("root", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def make_rows(count):
    for _ in range(count):
        owner = user_create()
        a, b = account_create(owner=owner, balance="10"), account_create(owner=owner)
        transfer_create(source_id=a.pk, target_id=b.pk, amount="1")


@pytest.mark.parametrize(
    "path",
    ["/admin/accounts/account/", "/admin/accounts/transfer/", "/admin/accounts/ledgerentry/"],
)
def test_changelists_run_a_constant_number_of_queries(staff, path):
    make_rows(2)
    with CaptureQueriesContext(connection) as few:
        assert staff.get(path).status_code == 200
    make_rows(15)
    with CaptureQueriesContext(connection) as many:
        assert staff.get(path).status_code == 200
    assert len(many) == len(few) <= 8


def test_account_change_page_runs_a_constant_number_of_queries(staff):
    owner = user_create()
    account, other = account_create(owner=owner, balance="300"), account_create(owner=owner)
    path = f"/admin/accounts/account/{account.pk}/change/"
    transfer_create(source_id=account.pk, target_id=other.pk, amount="1")
    staff.get(path)  # warm: process-wide caches (content types) filled
    with CaptureQueriesContext(connection) as few:
        assert staff.get(path).status_code == 200
    for _ in range(30):  # thirty more transfers and ledger entries on this account
        transfer_create(source_id=account.pk, target_id=other.pk, amount="1")
    with CaptureQueriesContext(connection) as many:
        assert staff.get(path).status_code == 200
    assert len(many) == len(few) <= 8


def test_admin_edit_goes_through_optimistic_locking(staff):
    account = account_create(owner=user_create(), name="Old")
    response = staff.post(
        f"/admin/accounts/account/{account.pk}/change/", {"name": "New", "version": 1}
    )
    assert response.status_code == 302
    account.refresh_from_db()
    assert (account.name, account.version) == ("New", 2)


def test_admin_stale_edit_is_a_message_not_a_lost_edit(staff):
    account = account_create(owner=user_create(), name="Old")
    account_update(account_id=account.pk, expected_version=1, name="Edited elsewhere")
    response = staff.post(
        f"/admin/accounts/account/{account.pk}/change/", {"name": "Mine", "version": 1}, follow=True
    )
    assert b"Not saved" in response.content and b"changed by someone else" in response.content
    account.refresh_from_db()
    assert account.name == "Edited elsewhere"
    # Both versions, like the site's 409 page: what it holds now, and what this editor typed.
    page = response.content.decode()
    conflict = page[page.index('<table class="conflict">') :]
    assert "Now (version 2)" in conflict and "You sent (from version 1)" in conflict
    assert "<td>Edited elsewhere</td><td>Mine</td>" in conflict
    assert 'value="Edited elsewhere"' in page  # the form holds the current values


def test_transfers_and_ledger_are_read_only_in_admin(staff):
    assert staff.get("/admin/accounts/transfer/add/").status_code == 403
    assert staff.get("/admin/accounts/ledgerentry/add/").status_code == 403


def test_admin_requires_staff(client):
    client.force_login(user_create())
    response = client.get("/admin/accounts/account/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_admin_adds_an_empty_account(staff):
    owner = user_create("owner")
    response = staff.post(
        "/admin/accounts/account/add/", {"owner": owner.pk, "name": "New", "currency": "EUR"}
    )
    assert response.status_code == 302
    account = Account.objects.get(name="New")
    assert (account.owner_id, account.balance, account.version) == (owner.pk, 0, 1)


def test_changelists_show_money_with_separators_and_currency(staff):
    owner = user_create()
    source = account_create(owner=owner, balance="23456.70", currency="USD")
    target = account_create(owner=owner, currency="USD")
    transfer_create(source_id=source.pk, target_id=target.pk, amount="1234.5")
    assert "22,222.20\u00a0USD" in staff.get("/admin/accounts/account/").content.decode()
    assert "1,234.50\u00a0USD" in staff.get("/admin/accounts/transfer/").content.decode()
    ledger = staff.get("/admin/accounts/ledgerentry/").content.decode()
    assert "\u22121,234.50\u00a0USD" in ledger and "+1,234.50\u00a0USD" in ledger


def test_the_add_form_shows_no_unfilled_creation_date(staff):
    page = staff.get("/admin/accounts/account/add/").content.decode()
    assert "DatabaseDefault" not in page and "created_at" not in page
