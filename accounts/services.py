"""Every write of the accounts app. Transactions are opened here and nowhere else.

Failure behaviour, for each service:
- a domain error (``accounts.exceptions``) is raised before anything is written, or inside the
  transaction, which then rolls back: nothing of a failed call remains;
- every write runs in ``@service_transaction`` (``dbops.transactions``): one durable transaction
  (refused inside a caller's ``atomic()``), a transaction-local lock timeout
  (``DBOPS["SERVICE_LOCK_TIMEOUT_MS"]``), and the whole transaction re-run on a deadlock, a
  serialization failure or a lock timeout; when the attempts run out,
  ``dbops.transactions.ServiceTransactionFailed`` reaches the caller and nothing was written
  (a view answers 409: busy, try again);
- a connection lost mid-call (server restart, killed backend) rolls the transaction back on the
  server; the caller retries with the same idempotency key and the money moves exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F

from accounts.exceptions import (
    AccountNotFound,
    CurrencyMismatch,
    DomainError,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    InvalidChange,
    NotAccountOwner,
    SameAccount,
)
from accounts.locks import accounts_lock
from accounts.models import Account, LedgerEntry, LedgerKey, Transfer
from accounts.sql import BALANCES_MOVE, TRANSFER_BY_KEY, ledger_insert, transfer_insert
from core.idempotency import idempotency_key_clean
from core.ids import id_parse
from core.money import MONEY_MAX, money_parse
from core.versioning import versioned_update
from dbops.errors import constraint_name, error_text
from dbops.transactions import service_transaction

ACCOUNT_NAME_MAX = 100


def _account_id(value: Any) -> int:
    """An account primary key from an int or a digit string; anything else does not exist."""
    account_id = id_parse(value)
    if account_id is None:
        raise AccountNotFound(value)
    return account_id


# The unique constraints a second entry with a used deposit key fails on: the key table's (the
# ledger partitioned), or the plain ledger's own (before its conversion reached the key table).
DEPOSIT_KEY_CONSTRAINTS = {"accounts_ledgerkey_pkey", "ledger_idempotency_key_per_account"}


def account_deposit(
    *, account_id: int, amount: Any, idempotency_key: str | None = None
) -> LedgerEntry:
    """Add money to one account; a replay with the same key returns the first entry."""
    try:
        return _deposit_apply(account_id=account_id, amount=amount, idempotency_key=idempotency_key)
    except IntegrityError as exc:
        # The key was used, but the lookup under the lock did not see it: during the ledger's
        # conversion (accounts/migrations/0003-0005) an entry the history copy has not reached
        # yet has no key row. The database refused the second entry; answer from the ledger.
        key = idempotency_key_clean(idempotency_key)
        if key is None or constraint_name(exc) not in DEPOSIT_KEY_CONSTRAINTS:
            raise
        return _deposit_replay(_account_id(account_id), money_parse(amount), key)


@service_transaction
def _deposit_apply(*, account_id: Any, amount: Any, idempotency_key: str | None) -> LedgerEntry:
    account_id = _account_id(account_id)
    amount = money_parse(amount)
    key = idempotency_key_clean(idempotency_key)
    account = accounts_lock([account_id]).get(account_id)
    if account is None:
        raise AccountNotFound(account_id)
    if key is not None:
        # Checked under the account's lock, as for transfers: a concurrent deposit with the same
        # key waits above, then finds the committed entry here.
        earlier = _deposit_by_key(account.pk, key)
        if earlier is not None:
            return _deposit_same(earlier, amount, key)
    balance_after = account.balance + amount
    if balance_after > MONEY_MAX:
        raise InvalidAmount(amount, f"the balance would exceed {MONEY_MAX}")
    Account.objects.filter(pk=account.pk).update(balance=F("balance") + amount)
    return LedgerEntry.objects.create(
        account=account, amount=amount, balance_after=balance_after, idempotency_key=key
    )


def _deposit_same(earlier: LedgerEntry, amount: Decimal, key: str) -> LedgerEntry:
    """The first entry of a replayed deposit key, or IdempotencyConflict for other parameters."""
    if earlier.amount != amount or earlier.transfer_id is not None:
        raise IdempotencyConflict(key)
    return earlier


def _deposit_replay(account_id: int, amount: Decimal, key: str) -> LedgerEntry:
    """The entry a used key belongs to, read from every partition (the rare path above)."""
    earlier = next(
        iter(LedgerEntry.objects.filter(account_id=account_id, idempotency_key=key).order_by()[:1])
    )
    return _deposit_same(earlier, amount, key)


def _deposit_by_key(account_id: int, key: str) -> LedgerEntry | None:
    """The entry a deposit key was first used for. The ledger is partitioned by month: its key row
    (LedgerKey, one index lookup) names the entry's id and time, so the entry is read from one
    partition instead of one index probe per month."""
    found = (
        LedgerKey.objects.filter(account_id=account_id, idempotency_key=key)
        .order_by()
        .values_list("entry_id", "entry_created_at")[:1]
    )
    for entry_id, created_at in found:
        entries = LedgerEntry.objects.filter(pk=entry_id, created_at=created_at).order_by()[:1]
        return next(iter(entries), None)
    return None


def _transfer_apply(
    *,
    source_id: int,
    target_id: int,
    amount: Any,
    idempotency_key: str | None,
    memo: str,
    actor,
) -> Transfer:
    """The transfer itself; the caller holds the transaction."""
    source_id, target_id = _account_id(source_id), _account_id(target_id)
    amount = money_parse(amount)
    key = idempotency_key_clean(idempotency_key)
    memo = (memo or "").strip()
    if len(memo) > 200:
        raise InvalidChange("memo", "at most 200 characters")
    if source_id == target_id:
        raise SameAccount()
    locked = accounts_lock([source_id, target_id])
    for account_id in (source_id, target_id):
        if account_id not in locked:
            raise AccountNotFound(account_id)
    source, target = locked[source_id], locked[target_id]
    if actor is not None and source.owner_id != actor.pk:
        raise NotAccountOwner(source_id)
    if key is not None:
        # Checked under the source's lock: a concurrent call with the same key waits above, then
        # sees the committed transfer here and returns it instead of moving the money again.
        for earlier in TRANSFER_BY_KEY.objects(source_id, key):
            if earlier.target_id != target_id or earlier.amount != amount:
                raise IdempotencyConflict(key)
            return earlier
    return _transfer_write(source, target, amount, key=key, memo=memo, actor=actor)


def _transfer_write(
    source: Account, target: Account, amount: Decimal, *, key: str | None, memo: str, actor
) -> Transfer:
    """Check the locked accounts can take the transfer, then move the money and write the ledger."""
    if source.currency != target.currency:
        raise CurrencyMismatch(source.currency, target.currency)
    if source.balance < amount:
        raise InsufficientFunds(source, amount)
    if target.balance + amount > MONEY_MAX:
        raise InvalidAmount(amount, f"the target balance would exceed {MONEY_MAX}")

    # Compiled once per process (accounts/sql.py): the ORM's per-call cost left this hot path.
    BALANCES_MOVE.execute(source.pk, target.pk, amount)
    transfer = transfer_insert(source, target, amount, key=key, memo=memo, actor=actor)
    ledger_insert(transfer, source, target)
    return transfer


@service_transaction
def transfer_create(
    *,
    source_id: int,
    target_id: int,
    amount: Any,
    idempotency_key: str | None = None,
    memo: str = "",
    actor=None,
) -> Transfer:
    """Move ``amount`` from source to target in one durable transaction, exactly once per key."""
    return _transfer_apply(
        source_id=source_id,
        target_id=target_id,
        amount=amount,
        idempotency_key=idempotency_key,
        memo=memo,
        actor=actor,
    )


@dataclass
class BatchResult:
    succeeded: list[tuple[int, Transfer]] = field(default_factory=list)
    failed: list[tuple[int, DomainError]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


TRANSFER_ITEM_FIELDS = {"source_id", "target_id", "amount", "idempotency_key", "memo"}


@service_transaction
def transfer_batch(*, items: Iterable[Mapping[str, Any]], actor=None) -> BatchResult:
    """Many transfers in one transaction; bad items are reported, the good ones commit together."""
    items = list(items)
    # Lock every account of the batch up front, in primary-key order: two batches touching the
    # same accounts then queue behind each other instead of deadlocking item by item.
    accounts_lock(_batch_account_ids(items))
    return _batch_apply(items, actor)


def _batch_account_ids(items: list) -> set[int]:
    """Every account id the items name, as the items would be read (ints or digit strings)."""
    ids = set()
    for item in items:
        for name in ("source_id", "target_id"):
            try:
                ids.add(_account_id(item.get(name)))
            except (AttributeError, AccountNotFound):
                continue  # not a mapping, or no such id: the item fails on its own below
    return ids


def _batch_apply(items: list, actor) -> BatchResult:
    result = BatchResult()
    for index, item in enumerate(items):
        try:
            unknown = (
                set(item) - TRANSFER_ITEM_FIELDS
                if isinstance(item, Mapping)
                else {"<not a mapping>"}
            )
            if unknown:
                raise InvalidChange("item", f"unknown fields {sorted(unknown)}")
            # A savepoint per item, so one bad item rolls back alone and the batch goes on.
            with transaction.atomic():
                transfer = _transfer_apply(
                    source_id=item.get("source_id"),
                    target_id=item.get("target_id"),
                    amount=item.get("amount"),
                    idempotency_key=item.get("idempotency_key"),
                    memo=item.get("memo", ""),
                    actor=actor,
                )
        except DomainError as exc:
            result.failed.append((index, exc))
        except IntegrityError as exc:
            # A constraint the checks above did not foresee: this item only.
            result.failed.append((index, InvalidChange("item", error_text(exc))))
        else:
            result.succeeded.append((index, transfer))
    return result


EDITABLE_ACCOUNT_FIELDS = {"name"}


@service_transaction
def account_update(*, account_id: int, expected_version: int, **changes: Any) -> Account:
    """Change an account's details if nobody changed it since ``expected_version`` was read.

    One conditional UPDATE (``WHERE id = %s AND version = %s``, ``version = version + 1``): no lock
    is held while a person edits, and a second editor working from the same version changes zero
    rows and gets ``StaleVersion`` with the current values instead of overwriting the first edit.
    """
    unknown = set(changes) - EDITABLE_ACCOUNT_FIELDS
    if unknown:
        raise InvalidChange(", ".join(sorted(unknown)), "cannot be changed here")
    if "name" in changes:
        name = str(changes["name"]).strip()
        if not name or len(name) > ACCOUNT_NAME_MAX:
            raise InvalidChange("name", f"must be 1 to {ACCOUNT_NAME_MAX} characters")
        changes["name"] = name
    current = versioned_update(Account, pk=account_id, expected_version=expected_version, **changes)
    if current is None:
        raise AccountNotFound(account_id)
    return current
