from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import F

from accounts.exceptions import (
    AccountNotFound,
    CurrencyMismatch,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    InvalidChange,
    NotAccountOwner,
    SameAccount,
    StaleVersion,
)
from accounts.models import Account, LedgerEntry, Transfer
from accounts.services import account_deposit, account_update, transfer_batch, transfer_create
from dbops.errors import constraint_name
from dbops.retry import RetryInsideTransaction
from tests.accounts.invariants import assert_ledger_matches_balances
from tests.factories import account_create, user_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def pair():
    owner = user_create()
    return account_create(owner=owner, balance="100.00"), account_create(
        owner=owner, balance="5.00"
    )


def snapshot():
    return (
        Transfer.objects.count(),
        LedgerEntry.objects.count(),
        sorted(Account.objects.values_list("pk", "balance", "version")),
    )


def test_transfer_moves_money_and_writes_both_ledger_entries(pair):
    source, target = pair
    transfer = transfer_create(
        source_id=source.pk, target_id=target.pk, amount="30.25", memo="rent"
    )
    source.refresh_from_db()
    target.refresh_from_db()
    assert (source.balance, target.balance) == (Decimal("69.75"), Decimal("35.25"))
    debit, credit = sorted(transfer.entries.all(), key=lambda e: e.amount)
    assert (debit.account_id, debit.amount, debit.balance_after) == (
        source.pk,
        Decimal("-30.25"),
        Decimal("69.75"),
    )
    assert (credit.account_id, credit.amount, credit.balance_after) == (
        target.pk,
        Decimal("30.25"),
        Decimal("35.25"),
    )
    assert transfer.memo == "rent"
    assert_ledger_matches_balances()


@pytest.mark.parametrize(
    "amount, reason",
    [
        ("0", "greater than zero"),
        ("-5", "greater than zero"),
        ("1.005", "two decimal places"),
        ("NaN", "in digits"),
        ("Infinity", "in digits"),
        ("-Infinity", "in digits"),
        (Decimal("NaN"), "finite"),
        (Decimal("-Infinity"), "finite"),
        ("1000000000000", "at most"),
        ("1E+30", "in digits"),
        ("1e3", "in digits"),
        (Decimal("1E+30"), "at most"),
        ("ten", "in digits"),
        ("", "in digits"),
        (1.5, "never a float"),
    ],
)
def test_transfer_rejects_bad_amount_and_writes_nothing(pair, amount, reason):
    source, target = pair
    before = snapshot()
    with pytest.raises(InvalidAmount, match=reason):
        transfer_create(source_id=source.pk, target_id=target.pk, amount=amount)
    assert snapshot() == before


def test_transfer_rejects_same_account(pair):
    before = snapshot()
    with pytest.raises(SameAccount):
        transfer_create(source_id=pair[0].pk, target_id=pair[0].pk, amount="1")
    assert snapshot() == before


@pytest.mark.parametrize("bad_id", [999_999_999, "abc", None, -1])
def test_transfer_rejects_unknown_account(pair, bad_id):
    before = snapshot()
    with pytest.raises(AccountNotFound):
        transfer_create(source_id=pair[0].pk, target_id=bad_id, amount="1")
    assert snapshot() == before


def test_transfer_rejects_insufficient_funds(pair):
    source, target = pair
    before = snapshot()
    with pytest.raises(InsufficientFunds) as excinfo:
        transfer_create(source_id=target.pk, target_id=source.pk, amount="5.01")
    assert excinfo.value.available == Decimal("5.00") and excinfo.value.requested == Decimal("5.01")
    assert snapshot() == before


def test_transfer_rejects_currency_mismatch(pair):
    usd = account_create(owner=pair[0].owner, currency="USD")
    before = snapshot()
    with pytest.raises(CurrencyMismatch):
        transfer_create(source_id=pair[0].pk, target_id=usd.pk, amount="1")
    assert snapshot() == before


def test_transfer_rejects_moving_someone_elses_money(pair):
    before = snapshot()
    with pytest.raises(NotAccountOwner):
        transfer_create(source_id=pair[0].pk, target_id=pair[1].pk, amount="1", actor=user_create())
    assert snapshot() == before


def test_replay_with_the_same_key_returns_the_first_transfer_and_moves_nothing(pair):
    source, target = pair
    first = transfer_create(
        source_id=source.pk, target_id=target.pk, amount="10", idempotency_key="k-1"
    )
    again = transfer_create(
        source_id=source.pk, target_id=target.pk, amount="10.00", idempotency_key="k-1"
    )
    assert again.pk == first.pk
    source.refresh_from_db()
    assert source.balance == Decimal("90.00")
    assert Transfer.objects.count() == 1


def test_same_key_with_different_parameters_is_a_conflict(pair):
    source, target = pair
    transfer_create(source_id=source.pk, target_id=target.pk, amount="10", idempotency_key="k-2")
    before = snapshot()
    with pytest.raises(IdempotencyConflict):
        transfer_create(
            source_id=source.pk, target_id=target.pk, amount="11", idempotency_key="k-2"
        )
    assert snapshot() == before


def test_deposit_is_idempotent(pair):
    first = account_deposit(account_id=pair[1].pk, amount="7", idempotency_key="d-1")
    again = account_deposit(account_id=pair[1].pk, amount="7", idempotency_key="d-1")
    assert again.pk == first.pk
    pair[1].refresh_from_db()
    assert pair[1].balance == Decimal("12.00")
    with pytest.raises(IdempotencyConflict):
        account_deposit(account_id=pair[1].pk, amount="8", idempotency_key="d-1")
    assert_ledger_matches_balances()


def test_batch_commits_good_items_and_reports_bad_ones(pair):
    source, target = pair
    other = account_create(owner=source.owner, currency="USD")
    result = transfer_batch(
        items=[
            {"source_id": source.pk, "target_id": target.pk, "amount": "10"},
            {"source_id": source.pk, "target_id": target.pk, "amount": "-1"},
            {"source_id": target.pk, "target_id": source.pk, "amount": "1000"},
            {"source_id": source.pk, "target_id": other.pk, "amount": "1"},
            {"source_id": source.pk, "target_id": 999_999_999, "amount": "1"},
            {"source_id": source.pk, "target_id": target.pk, "amount": "1", "colour": "red"},
            {"source_id": target.pk, "target_id": source.pk, "amount": "2.50"},
        ]
    )
    assert [i for i, _ in result.succeeded] == [0, 6]
    failures = {i: type(exc).__name__ for i, exc in result.failed}
    assert failures == {
        1: "InvalidAmount",
        2: "InsufficientFunds",
        3: "CurrencyMismatch",
        4: "AccountNotFound",
        5: "InvalidChange",
    }
    source.refresh_from_db()
    assert source.balance == Decimal("92.50")
    assert Transfer.objects.count() == 2
    assert_ledger_matches_balances()


@pytest.fixture
def transfers_refused_by_memo():
    """A trigger that refuses a transfer row with the memo 'refuse me' (a constraint the service
    cannot foresee), raised after the item has already moved both balances."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE FUNCTION refuse_marked_transfer() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.memo = 'refuse me' THEN
                    RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'check_violation';
                END IF;
                RETURN NEW;
            END $$
            """
        )
        cursor.execute(
            "CREATE TRIGGER refuse_marked_transfer BEFORE INSERT ON accounts_transfer"
            " FOR EACH ROW EXECUTE FUNCTION refuse_marked_transfer()"
        )
    # Created inside the test's transaction: rolled back with it.


def test_a_batch_item_that_fails_after_it_wrote_rolls_back_alone(pair, transfers_refused_by_memo):
    source, target = pair
    result = transfer_batch(
        items=[
            {"source_id": source.pk, "target_id": target.pk, "amount": "10"},
            {"source_id": source.pk, "target_id": target.pk, "amount": "20", "memo": "refuse me"},
            {"source_id": target.pk, "target_id": source.pk, "amount": "1"},
        ]
    )
    assert [i for i, _ in result.succeeded] == [0, 2]
    assert [(i, type(exc).__name__) for i, exc in result.failed] == [(1, "InvalidChange")]
    source.refresh_from_db()
    target.refresh_from_db()
    # The refused item's balance changes went with its savepoint; the others committed.
    assert (source.balance, target.balance) == (Decimal("91.00"), Decimal("14.00"))
    assert Transfer.objects.count() == 2
    assert_ledger_matches_balances()


@pytest.mark.parametrize(
    "write, constraint",
    [
        (
            lambda a, b: Account.objects.filter(pk=b.pk).update(balance=F("balance") - 6),
            "account_balance_non_negative",
        ),
        (
            lambda a, b: Transfer.objects.create(source=a, target=b, amount=Decimal("0")),
            "transfer_amount_positive",
        ),
        (
            lambda a, b: Transfer.objects.create(source=a, target=a, amount=Decimal("1")),
            "transfer_distinct_accounts",
        ),
    ],
    ids=["balance >= 0", "amount > 0", "source != target"],
)
def test_the_database_refuses_what_the_services_check_whatever_the_code_does(
    pair, write, constraint
):
    # The last line of defence: writes that skip every check in the services.
    with pytest.raises(IntegrityError) as refused, transaction.atomic():
        write(*pair)
    assert constraint_name(refused.value) == constraint
    assert Transfer.objects.count() == 0
    assert_ledger_matches_balances()


def test_account_update_bumps_the_version(pair):
    account = pair[0]
    updated = account_update(
        account_id=account.pk, expected_version=account.version, name="Savings"
    )
    assert (updated.name, updated.version) == ("Savings", account.version + 1)


def test_stale_update_raises_with_the_current_values_and_keeps_the_first_edit(pair):
    account = pair[0]
    account_update(account_id=account.pk, expected_version=account.version, name="First")
    with pytest.raises(StaleVersion) as excinfo:
        account_update(account_id=account.pk, expected_version=account.version, name="Second")
    assert excinfo.value.current.name == "First"
    account.refresh_from_db()
    assert account.name == "First" and account.version == 2


@pytest.mark.parametrize("changes", [{"balance": "1000"}, {"name": ""}, {"name": "x" * 101}])
def test_account_update_rejects_bad_changes(pair, changes):
    before = snapshot()
    with pytest.raises(InvalidChange):
        account_update(account_id=pair[0].pk, expected_version=1, **changes)
    assert snapshot() == before


def test_account_update_of_unknown_account(pair):
    with pytest.raises(AccountNotFound):
        account_update(account_id=999_999_999, expected_version=1, name="x")


@pytest.mark.django_db(transaction=True)
def test_transfer_refuses_to_run_inside_an_outer_transaction():
    owner = user_create()
    a, b = account_create(owner=owner, balance="1"), account_create(owner=owner)
    with transaction.atomic(), pytest.raises(RetryInsideTransaction):
        transfer_create(source_id=a.pk, target_id=b.pk, amount="1")
