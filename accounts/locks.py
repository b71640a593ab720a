"""The only place that builds select_for_update() querysets for accounts."""

from collections.abc import Iterable

from django.db.models import F

from accounts.models import Account
from dbops.statements import AnyOf, CompiledSelect

# Written with the ORM, compiled once per process (``dbops.statements``): the same SQL text on
# every call, ``... WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE``, whatever the number of ids.
ACCOUNTS_LOCK = CompiledSelect(
    lambda ids: (
        Account.objects.select_for_update(no_key=True).filter(AnyOf(F("pk"), ids)).order_by("pk")
    ),
    [-1],
    name="accounts_lock",
)


def accounts_lock(account_ids: Iterable[int]) -> dict[int, Account]:
    """Lock the accounts for this transaction and return them by id; missing ids are absent.

    Rows are locked in primary-key order, whoever calls and in whatever direction money moves, so
    two transfers between the same accounts can never hold one lock each and wait for the other.
    FOR NO KEY UPDATE (``no_key=True``) is enough to change a balance and, unlike FOR UPDATE, does
    not block other transactions inserting ledger entries and transfers that reference the account.
    """
    # Run now, so the locks are taken here, in this order.
    return {account.pk: account for account in ACCOUNTS_LOCK.objects(sorted(set(account_ids)))}
