"""The transfer's statements past the lock, compiled once per process (``dbops.statements``).

``transfer_create`` runs these on every call; building them with the ORM each time cost more CPU
than everything else in a transfer. The SELECT and the UPDATE are still written with the ORM
(``F()`` changes each balance relative to itself); the INSERTs are column lists from the models.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import connection
from django.db.models import Case, F, When

from accounts.models import Account, LedgerEntry, Transfer
from dbops.statements import CompiledSelect, CompiledUpdate, insert_sql

# Unique per source: no ORDER BY (``first()`` would add one and walk the account's history).
TRANSFER_BY_KEY = CompiledSelect(
    lambda source_id, key: Transfer.objects.filter(
        source_id=source_id, idempotency_key=key
    ).order_by()[:1],
    -1,
    "example-key",
    name="transfer_by_key",
)

# One UPDATE for both rows (a round trip less), each balance changed relative to itself.
BALANCES_MOVE = CompiledUpdate(
    lambda source_id, target_id, amount: (
        Account.objects.filter(pk__in=[source_id, target_id]),
        {
            "balance": Case(
                When(pk=source_id, then=F("balance") - amount),
                When(pk=target_id, then=F("balance") + amount),
            )
        },
    ),
    -1,
    -2,
    Decimal("-0.01"),
    name="balances_move",
)

TRANSFER_FIELDS = ("source", "target", "amount", "idempotency_key", "memo", "created_by")
LEDGER_FIELDS = ("account", "transfer", "amount", "balance_after")


def transfer_insert(
    source: Account, target: Account, amount: Decimal, *, key: str | None, memo: str, actor
) -> Transfer:
    """INSERT the transfer; the instance as ``Transfer.objects.create`` would return it."""
    sql = insert_sql(Transfer, TRANSFER_FIELDS, returning=("id", "created_at"))
    values = [source.pk, target.pk, amount, key, memo, actor.pk if actor is not None else None]
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        pk, created_at = cursor.fetchone()
    transfer = Transfer(
        id=pk,
        source=source,
        target=target,
        amount=amount,
        idempotency_key=key,
        memo=memo,
        created_by=actor,
        created_at=created_at,
    )
    transfer._state.adding = False
    transfer._state.db = connection.alias
    return transfer


def ledger_insert(transfer: Transfer, source: Account, target: Account) -> None:
    """The debit and the credit; the rows are locked, so the balances read are the ones changed."""
    amount = transfer.amount
    with connection.cursor() as cursor:
        cursor.execute(
            insert_sql(LedgerEntry, LEDGER_FIELDS, rows=2),
            [
                *(source.pk, transfer.pk, -amount, source.balance - amount),
                *(target.pk, transfer.pk, amount, target.balance + amount),
            ],
        )
