"""Demo data for the accounts app; ``manage.py seed_demo`` calls it."""

from __future__ import annotations

import random
from decimal import Decimal

from django.db import transaction

from accounts.models import Account, LedgerEntry, Transfer
from core.demo import BATCH, DEMO_PASSWORD, DEMO_USERNAME, demo_user_get, people_ensure

__all__ = ["DEMO_PASSWORD", "DEMO_USERNAME", "accounts_seed"]

DEMO_LOGIN_TRANSFERS = 50


def _transfer_pairs(rng: random.Random, new: list, demo, per_account: int) -> list:
    """(source, target) ids of the transfers to write between the new EUR accounts: random ones,
    then the demo login's own, so its history runs to a few pages (TRANSFER_PAGE_SIZE is 25) and
    its keyset pager has somewhere to go."""
    eur = [a.pk for a in new if a.currency == "EUR"]
    pairs = [rng.sample(eur, 2) for _ in range(per_account * len(eur) if len(eur) > 1 else 0)]
    mine = [a.pk for a in new if a.owner_id == demo.pk and a.currency == "EUR"]
    others = [pk for pk in eur if pk not in mine]
    for n in range(DEMO_LOGIN_TRANSFERS if mine and others else 0):
        own, other = mine[n % len(mine)], rng.choice(others)
        pairs.append((own, other) if n % 2 else (other, own))
    return pairs


@transaction.atomic
def accounts_seed(*, accounts: int, transfers_per_account: int = 4, seed: int = 42) -> int:
    """Bring the demo data set up to ``accounts`` accounts with a transfer history; returns how many
    accounts were added. Balances, transfers and ledger entries are computed here and written with
    ``bulk_create``, consistently: each balance equals the sum of its entries."""
    demo = demo_user_get()
    have = Account.objects.filter(name__startswith="Demo ").count()
    missing = max(0, accounts - have)
    if not missing:
        return 0
    rng = random.Random(seed + have)
    people = people_ensure(max(1, accounts // 2))
    owners = [demo] + people
    new = []
    for i in range(have, have + missing):
        owner = demo if i < 3 else owners[1 + (i - 3) // 2 % len(people)]
        currency = "USD" if i == 2 else "EUR"
        new.append(
            Account(
                owner=owner, name=f"Demo {i + 1:05d}", currency=currency, balance=Decimal("0.00")
            )
        )
    Account.objects.bulk_create(new, batch_size=BATCH)

    balances = {a.pk: Decimal(rng.randint(100, 5000)) for a in new}
    entries = [
        LedgerEntry(
            account_id=pk, amount=amount, balance_after=amount, idempotency_key=f"demo-open-{pk}"
        )
        for pk, amount in balances.items()
    ]
    planned = []
    for source, target in _transfer_pairs(rng, new, demo, transfers_per_account):
        amount = min(balances[source], Decimal(rng.randint(100, 20000)) / 100)
        if amount <= 0:
            continue
        balances[source] -= amount
        balances[target] += amount
        planned.append((source, target, amount, balances[source], balances[target]))
    transfers = Transfer.objects.bulk_create(
        [Transfer(source_id=s, target_id=t, amount=a, memo="demo") for s, t, a, _, _ in planned],
        batch_size=BATCH,
    )
    for transfer, (s, t, a, after_s, after_t) in zip(transfers, planned, strict=True):
        entries.append(
            LedgerEntry(account_id=s, transfer=transfer, amount=-a, balance_after=after_s)
        )
        entries.append(
            LedgerEntry(account_id=t, transfer=transfer, amount=a, balance_after=after_t)
        )
    LedgerEntry.objects.bulk_create(entries, batch_size=BATCH)
    for account in new:
        account.balance = balances[account.pk]
    Account.objects.bulk_update(new, ["balance"], batch_size=BATCH)
    return missing
