import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command

from accounts.demo import DEMO_PASSWORD, DEMO_USERNAME
from accounts.models import Account, Transfer
from tests.accounts.invariants import assert_ledger_matches_balances

pytestmark = pytest.mark.django_db


def test_seed_demo_is_idempotent_and_consistent():
    call_command("seed_demo", "--accounts", "12", verbosity=0)
    counts = Account.objects.count(), Transfer.objects.count()
    assert counts[0] == 12 and counts[1] > 0
    call_command("seed_demo", "--accounts", "12", verbosity=0)
    assert (Account.objects.count(), Transfer.objects.count()) == counts
    assert_ledger_matches_balances()
    user = authenticate(username=DEMO_USERNAME, password=DEMO_PASSWORD)
    assert user is not None and user.is_staff
    assert Account.objects.filter(owner=user).count() == 3


def test_seed_demo_grows_to_a_larger_size():
    call_command("seed_demo", "--accounts", "6", verbosity=0)
    call_command("seed_demo", "--accounts", "10", verbosity=0)
    assert Account.objects.count() == 10
    assert_ledger_matches_balances()
