"""Every read the accounts pages need, scoped to one owner and already joined."""

from __future__ import annotations

from datetime import UTC, date, datetime

from django.db.models import Q, QuerySet

from accounts.models import Account, LedgerEntry, Transfer
from core.pagination import keyset_slice

TRANSFER_PAGE_SIZE = 25
STATEMENT_PAGE_SIZE = 50


def account_list(*, owner) -> QuerySet[Account]:
    return Account.objects.filter(owner=owner).order_by("pk")


def account_get(*, owner, account_id: int) -> Account | None:
    """The owner's account, or None (also for another person's account: it is not theirs to see)."""
    return Account.objects.filter(owner=owner, pk=account_id).first()


def transfer_list(
    *,
    owner,
    after: int | None = None,
    before: int | None = None,
    limit: int = TRANSFER_PAGE_SIZE,
) -> list[Transfer]:
    """The owner's transfers, newest first: ``limit`` older than the keyset cursor ``after`` (an
    id), or with ``before``, the ``limit`` just newer than it.

    Keyset, not OFFSET: page 1,000 costs what page 1 costs. The two directions are separate index
    scans (transfer_source_newest, transfer_target_newest) that PostgreSQL ORs together.
    """
    mine = Account.objects.filter(owner=owner).values("pk")
    transfers = Transfer.objects.filter(Q(source__in=mine) | Q(target__in=mine)).select_related(
        "source", "target"
    )
    return keyset_slice(transfers, after=after, before=before, limit=limit)


def transfer_by_key(*, owner, key: str) -> Transfer | None:
    """The transfer that the one-time key ``key`` made from one of the owner's accounts, with both
    accounts joined; None if the key has not been used. One query: the owner's few accounts, each
    looked up in the unique index on (source, idempotency_key)."""
    mine = Account.objects.filter(owner=owner).values("pk")
    found = Transfer.objects.filter(source__in=mine, idempotency_key=key).select_related(
        "source", "target"
    )
    return next(iter(found.order_by()[:1]), None)


def month_range(month: date) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month), in UTC: the bounds of one partition of the
    ledger (they are UTC months), so a query with this range reads that partition alone."""
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    following = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return start, datetime(following.year, following.month, 1, tzinfo=UTC)


def ledger_entries(
    *,
    account_id: int,
    month: date,
    after: int | None = None,
    before: int | None = None,
    limit: int = STATEMENT_PAGE_SIZE,
) -> list[LedgerEntry]:
    """An account's ledger entries of one month, newest first, by keyset on id (``after``,
    ``before``), each with its transfer. The caller has checked the account is the person's.

    The month is a range on ``created_at``, the ledger's partition key: PostgreSQL prunes every
    other month's partition at planning time (tests/accounts/test_partitioning.py reads the plan).
    """
    start, end = month_range(month)
    entries = LedgerEntry.objects.filter(
        account_id=account_id, created_at__gte=start, created_at__lt=end
    ).select_related("transfer")
    return keyset_slice(entries, after=after, before=before, limit=limit)
