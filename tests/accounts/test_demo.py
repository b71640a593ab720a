import pytest
from django.contrib.auth import get_user_model

from accounts.demo import DEMO_PASSWORD, DEMO_USERNAME
from accounts.models import Account, Transfer
from tests.accounts.invariants import assert_ledger_matches_balances
from tests.helpers import run_command

pytestmark = pytest.mark.django_db


def test_seed_demo_is_idempotent_and_consistent(client):
    run_command("seed_demo", "--accounts", "12", verbosity=0)
    counts = Account.objects.count(), Transfer.objects.count()
    assert counts[0] == 12 and counts[1] > 0
    run_command("seed_demo", "--accounts", "12", verbosity=0)
    assert (Account.objects.count(), Transfer.objects.count()) == counts
    assert_ledger_matches_balances()
    # The printed demo login logs in through the login page (and its throttle).
    response = client.post("/login/", {"username": DEMO_USERNAME, "password": DEMO_PASSWORD})
    assert response.status_code == 302
    user = get_user_model().objects.get(username=DEMO_USERNAME)
    assert user.is_staff and client.session["_auth_user_id"] == str(user.pk)
    assert Account.objects.filter(owner=user).count() == 3


def test_seed_demo_grows_to_a_larger_size():
    run_command("seed_demo", "--accounts", "6", verbosity=0)
    run_command("seed_demo", "--accounts", "10", verbosity=0)
    assert Account.objects.count() == 10
    assert_ledger_matches_balances()


def test_the_demo_logins_history_reaches_a_second_page(client):
    from accounts.selectors import TRANSFER_PAGE_SIZE

    run_command("seed_demo", "--accounts", "40", "--customers", "0", "--orders", "0", verbosity=0)
    user = get_user_model().objects.get(username=DEMO_USERNAME)
    client.force_login(user)
    page = client.get("/accounts/transfers/").context["page"]
    assert len(page.items) == TRANSFER_PAGE_SIZE and page.older is not None
