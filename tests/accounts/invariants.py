from decimal import Decimal

from django.db.models import Sum

from accounts.models import Account, LedgerEntry


def assert_ledger_matches_balances() -> None:
    """Every balance equals the sum of its ledger entries, and none is negative."""
    sums = dict(LedgerEntry.objects.values_list("account").annotate(total=Sum("amount")))
    for account_id, balance in Account.objects.values_list("pk", "balance"):
        assert balance >= 0, f"account {account_id} is negative: {balance}"
        assert balance == sums.get(account_id, Decimal("0")), (
            f"account {account_id}: {balance} != ledger"
        )


def total_money() -> Decimal:
    return Account.objects.aggregate(total=Sum("balance"))["total"] or Decimal("0")
