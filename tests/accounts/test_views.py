from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import Account, LedgerEntry, Transfer
from accounts.services import account_deposit, transfer_create
from tests.factories import account_create, user_create

pytestmark = pytest.mark.django_db

PAGES = ["/accounts/", "/accounts/transfers/new/", "/accounts/transfers/"]


@pytest.fixture
def alice(client):
    user = user_create("alice")
    client.force_login(user)
    return user


@pytest.fixture
def accounts(alice):
    return account_create(owner=alice, balance="100.00", name="Main"), account_create(
        owner=alice, name="Savings"
    )


def rows_written():
    return (
        Transfer.objects.count(),
        LedgerEntry.objects.count(),
        sorted(Account.objects.values_list("balance", flat=True)),
    )


def form_data(accounts, **overrides):
    data = {
        "source": accounts[0].pk,
        "target": accounts[1].pk,
        "amount": "10.00",
        "memo": "",
        "idempotency_key": "form-key-1",
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize("path", [*PAGES, "/accounts/1/edit/"])
def test_pages_require_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_overview_shows_only_my_accounts(client, accounts):
    theirs = account_create(owner=user_create("mallory"), name="Mallory's secret", balance="5")
    response = client.get("/accounts/")
    assert response.status_code == 200
    assert b"Main" in response.content and b"Savings" in response.content
    assert theirs.name.encode() not in response.content


def test_a_new_transfer_form_gets_an_address_of_its_own_with_a_fresh_key(client, accounts):
    first, second = (client.get("/accounts/transfers/new/") for _ in range(2))
    assert first.status_code == second.status_code == 302
    assert first["Location"].startswith("/accounts/transfers/new/?key=")
    assert first["Location"] != second["Location"]
    key = first["Location"].split("key=")[1]
    form = client.get(first["Location"]).context["form"]
    assert form.initial["idempotency_key"] == key
    assert client.get(first["Location"]).context["form"].initial["idempotency_key"] == key


@pytest.mark.parametrize("key", ["", "a" * 65, "not a key", "k%2Fk", "ключ"])
def test_a_malformed_key_in_the_address_gets_a_fresh_one(client, accounts, key):
    response = client.get(f"/accounts/transfers/new/?key={key}")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/transfers/new/?key=")


def test_back_to_a_sent_form_shows_what_it_sent_and_sending_again_sends_nothing(client, accounts):
    """Back after sending: the browser asks for the form's address again (it is never stored)."""
    address = "/accounts/transfers/new/?key=form-key-1"
    assert client.post(address, form_data(accounts)).status_code == 302
    transfer = Transfer.objects.get()

    back = client.get(address)
    assert back.status_code == 200 and back.context["sent"] == transfer
    assert b"This form was sent already:</strong> transfer" in back.content
    assert back.context["form"].initial["amount"] == Decimal("10.00")

    # Send again, even with a value changed meanwhile: the first transfer, nothing more.
    again = client.post(address, form_data(accounts, amount="20.00"), follow=True)
    assert again.redirect_chain[-1][0] == "/accounts/transfers/"
    assert f"Transfer #{transfer.pk}" in again.content.decode()
    assert "Nothing was sent again." in again.content.decode()
    assert Transfer.objects.count() == 1
    accounts[0].refresh_from_db()
    assert accounts[0].balance == Decimal("90.00")


def test_a_key_used_by_another_person_is_not_theirs_to_see(client, accounts):
    mallory = user_create("mallory")
    theirs = account_create(owner=mallory, balance="50"), account_create(owner=mallory)
    transfer_create(
        source_id=theirs[0].pk, target_id=theirs[1].pk, amount="5", idempotency_key="same-key"
    )
    response = client.get("/accounts/transfers/new/?key=same-key")
    assert response.status_code == 200 and response.context["sent"] is None
    response = client.post(
        "/accounts/transfers/new/", form_data(accounts, idempotency_key="same-key")
    )
    assert response.status_code == 302
    assert Transfer.objects.count() == 2


def test_transfer_form_moves_money_and_says_in_how_many_queries(client, accounts):
    response = client.post("/accounts/transfers/new/", form_data(accounts), follow=True)
    assert Transfer.objects.get().amount == Decimal("10.00")
    [message] = [str(m) for m in response.context["messages"]]
    assert "10.00\u00a0EUR sent from Main to Savings, in one transaction of " in message
    assert message.endswith(" queries.")


def test_double_submit_moves_money_once(client, accounts):
    for _ in range(3):
        assert client.post("/accounts/transfers/new/", form_data(accounts)).status_code == 302
    assert Transfer.objects.count() == 1
    accounts[0].refresh_from_db()
    assert accounts[0].balance == Decimal("90.00")


@pytest.mark.parametrize(
    "overrides",
    [
        {"amount": "0"},
        {"amount": "-5"},
        {"amount": "1.005"},
        {"amount": "NaN"},
        {"amount": "Infinity"},
        {"amount": "1000000000000"},
        {"amount": "1e3"},
        {"amount": "1E1"},
        {"amount": "1_0"},
        {"amount": "١٢"},
        {"amount": "ten"},
        {"amount": ""},
        {"target": "SAME"},
        {"target": "999999999"},
        {"source": "abc"},
        {"amount": "100.01"},
        {"idempotency_key": ""},
        {"memo": "m" * 201},
    ],
)
def test_bad_transfer_input_is_a_form_error_and_writes_nothing(client, accounts, overrides):
    if overrides.get("target") == "SAME":
        overrides = {"target": accounts[0].pk}
    before = rows_written()
    response = client.post("/accounts/transfers/new/", form_data(accounts, **overrides))
    assert response.status_code == 400
    assert response.context["form"].errors
    assert rows_written() == before


def test_another_persons_account_is_not_a_valid_choice(client, accounts):
    theirs = account_create(owner=user_create("mallory"), balance="50")
    before = rows_written()
    for overrides in ({"source": theirs.pk}, {"target": theirs.pk}):
        response = client.post("/accounts/transfers/new/", form_data(accounts, **overrides))
        assert response.status_code == 400
    assert rows_written() == before


def test_currency_mismatch_is_a_form_error(client, accounts, alice):
    usd = account_create(owner=alice, currency="USD", name="Dollars")
    before = rows_written()
    response = client.post("/accounts/transfers/new/", form_data(accounts, target=usd.pk))
    assert response.status_code == 400
    assert b"Cannot move EUR into a USD account" in response.content
    assert rows_written() == before


def test_insufficient_funds_is_a_form_error(client, accounts):
    before = rows_written()
    response = client.post("/accounts/transfers/new/", form_data(accounts, amount="100.01"))
    assert response.status_code == 400
    assert rows_written() == before


@pytest.mark.parametrize("token", [None, "forged" * 8])
def test_transfer_without_a_valid_csrf_token_is_refused(accounts, alice, token):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    client.get("/accounts/transfers/new/", follow=True)  # sets the real CSRF cookie
    data = form_data(accounts)
    if token:
        data["csrfmiddlewaretoken"] = token
    before = rows_written()
    response = client.post("/accounts/transfers/new/", data)
    assert response.status_code == 403
    assert b"could not be accepted" in response.content
    assert rows_written() == before


def test_transfer_with_the_real_csrf_token_is_accepted(accounts, alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    token = client.get("/accounts/transfers/new/", follow=True).context["csrf_token"]
    response = client.post(
        "/accounts/transfers/new/", form_data(accounts, csrfmiddlewaretoken=str(token))
    )
    assert response.status_code == 302


def test_history_pages_by_keyset_and_shows_only_mine(client, accounts):
    source, target = accounts
    made = [
        transfer_create(source_id=source.pk, target_id=target.pk, amount="1").pk for _ in range(30)
    ]
    other = user_create("mallory")
    theirs = [account_create(owner=other, balance="5"), account_create(owner=other)]
    transfer_create(source_id=theirs[0].pk, target_id=theirs[1].pk, amount="1")

    first = client.get("/accounts/transfers/")
    assert [t.pk for t in first.context["transfers"]] == made[::-1][:25]
    assert first.context["page"].newer is None
    second = client.get(f"/accounts/transfers/?after={first.context['page'].older}")
    assert [t.pk for t in second.context["transfers"]] == made[::-1][25:]
    assert second.context["page"].older is None
    back = client.get(f"/accounts/transfers/?before={second.context['page'].newer}")
    assert [t.pk for t in back.context["transfers"]] == made[::-1][:25]
    assert back.context["page"].newer is None and back.context["page"].older == made[5]


def test_history_shows_older_only_when_there_is_more(client, accounts):
    source, target = accounts
    made = [
        transfer_create(source_id=source.pk, target_id=target.pk, amount="1").pk for _ in range(25)
    ]
    page = client.get("/accounts/transfers/").context["page"]
    assert len(page.items) == 25 and page.older is None
    transfer_create(source_id=source.pk, target_id=target.pk, amount="1")
    page = client.get("/accounts/transfers/").context["page"]
    assert page.older == made[1]


def test_history_past_the_end_says_no_more_not_none_yet(client, accounts):
    source, target = accounts
    first = transfer_create(source_id=source.pk, target_id=target.pk, amount="1")
    past = client.get(f"/accounts/transfers/?after={first.pk}")
    assert past.status_code == 200
    assert b"No more transfers." in past.content and b"No transfers yet" not in past.content
    assert b"Newest" in past.content
    newer = client.get(f"/accounts/transfers/?before={first.pk}")
    assert b"No more transfers." in newer.content


def test_history_of_a_new_user_says_none_yet(client, accounts):
    assert b"No transfers yet." in client.get("/accounts/transfers/").content


def test_history_marks_direction_and_my_accounts(client, accounts, alice):
    source, target = accounts
    stranger = account_create(owner=user_create("bob"), balance="50", name="Bob's")
    account_deposit(account_id=source.pk, amount=Decimal("2000"))
    transfer_create(source_id=source.pk, target_id=stranger.pk, amount="1234.5")
    transfer_create(source_id=stranger.pk, target_id=target.pk, amount="2")
    transfer_create(source_id=source.pk, target_id=target.pk, amount="3")
    rows = client.get("/accounts/transfers/").context["transfers"]
    assert [t.direction for t in rows] == ["own", "in", "out"]
    content = client.get("/accounts/transfers/").content.decode()
    assert "−1,234.50\u00a0EUR" in content and "+2.00\u00a0EUR" in content


@pytest.mark.parametrize("cursor", ["abc", "-1", "0", "1.5", "9" * 40, "²", "①", "١٢", "%00"])
def test_malformed_cursor_is_a_400(client, accounts, cursor):
    assert client.get(f"/accounts/transfers/?after={cursor}").status_code == 400


def test_edit_someone_elses_account_is_404(client, accounts):
    theirs = account_create(owner=user_create("mallory"))
    assert client.get(f"/accounts/{theirs.pk}/edit/").status_code == 404
    response = client.post(f"/accounts/{theirs.pk}/edit/", {"name": "pwned", "version": 1})
    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.name != "pwned"


def test_stale_edit_gets_a_409_with_the_current_values_and_keeps_the_first_edit(
    client, accounts, alice
):
    account = accounts[0]
    other_tab = Client()
    other_tab.force_login(alice)
    version = client.get(f"/accounts/{account.pk}/edit/").context["form"].initial["version"]
    assert (
        other_tab.post(
            f"/accounts/{account.pk}/edit/", {"name": "First", "version": version}
        ).status_code
        == 302
    )
    response = client.post(f"/accounts/{account.pk}/edit/", {"name": "Second", "version": version})
    assert response.status_code == 409
    assert b"First" in response.content and b"Second" in response.content
    account.refresh_from_db()
    assert account.name == "First"


@pytest.mark.parametrize(
    "data",
    [
        {"name": "", "version": 1},
        {"name": "x", "version": "9" * 30},
        {"name": "x", "version": "abc"},
        {"name": "x"},
    ],
)
def test_edit_with_bad_input_is_a_form_error(client, accounts, data):
    account = accounts[0]
    response = client.post(f"/accounts/{account.pk}/edit/", data)
    assert response.status_code == 400
    account.refresh_from_db()
    assert (account.name, account.version) == ("Main", 1)


def count_queries(client, path):
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured)


@pytest.mark.parametrize(
    "path, expected",
    [("/accounts/", 4), ("/accounts/transfers/new/?key=k", 5), ("/accounts/transfers/", 3)],
)
def test_pages_run_a_constant_number_of_queries(client, accounts, alice, path, expected):
    source, target = accounts
    transfer_create(source_id=source.pk, target_id=target.pk, amount="1")
    few = count_queries(client, path)
    for _ in range(3):
        account_create(owner=alice, balance="1")
    for _ in range(40):
        transfer_create(source_id=source.pk, target_id=target.pk, amount="1")
    assert count_queries(client, path) == few == expected
