from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now

from core.idempotency import IDEMPOTENCY_KEY_MAX, idempotency_key_unique
from core.money import money_field


class Account(models.Model):
    """A balance owned by one user, in one currency.

    ``balance`` only ever changes through ``accounts.services`` with ``F()`` and a ledger entry, and
    the database refuses a negative balance even if code forgets to check. ``version`` grows on
    every edit of the account's details, for optimistic locking (``account_update``).
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="money_accounts"
    )
    name = models.CharField(max_length=100)
    currency = models.CharField(max_length=3, default="EUR")
    balance = money_field(default=Decimal("0.00"))
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(balance__gte=0), name="account_balance_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(currency__regex=r"^[A-Z]{3}$"), name="account_currency_iso"
            ),
        ]

    def __str__(self):
        return f"{self.name} ({self.currency})"


class Transfer(models.Model):
    """Money moved from one account to another, written once and never changed.

    ``idempotency_key`` is unique per source account, so a client that retries (double submit,
    timeout, killed connection) with the same key gets the first transfer back instead of a second.
    """

    source = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="transfers_out", db_index=False
    )
    target = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="transfers_in", db_index=False
    )
    amount = money_field()
    idempotency_key = models.CharField(  # noqa: DJ001 (NULL: no key)
        max_length=IDEMPOTENCY_KEY_MAX, null=True, blank=True
    )
    memo = models.CharField(max_length=200, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        ordering = ["-pk"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="transfer_amount_positive"),
            models.CheckConstraint(
                condition=~Q(source=F("target")), name="transfer_distinct_accounts"
            ),
            idempotency_key_unique("source", name="transfer_idempotency_key_per_source"),
        ]
        indexes = [
            # History pages: an account's newest transfers, in either direction, by keyset on id.
            models.Index(fields=["source", "-id"], name="transfer_source_newest"),
            models.Index(fields=["target", "-id"], name="transfer_target_newest"),
        ]

    def __str__(self):
        return f"#{self.pk}: {self.amount} from {self.source_id} to {self.target_id}"


class LedgerEntry(models.Model):
    """One signed change of one account's balance, with the balance after it.

    Every balance change writes one, so an account's balance always equals the sum of its entries;
    a transfer writes two (debit and credit), a deposit one.

    The table is partitioned by month of ``created_at`` (accounts/migrations/0003-0006; README
    "Partitioning the ledger"). In the database its primary key is ``(id, created_at)``, since
    PostgreSQL requires the partition key in every unique constraint of a partitioned table; here
    ``id`` stays the model's primary key: ids come from one identity sequence, so they are unique,
    and the admin and every ``pk`` lookup keep working (Django 5.2's admin does not support
    composite primary keys). A read that names ``created_at`` too reads one partition. The deposit
    idempotency key, unique per account, cannot be a constraint of a partitioned table either:
    ``LedgerKey`` keeps it, written by a trigger in the same transaction as the entry.
    """

    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="entries", db_index=False
    )
    transfer = models.ForeignKey(
        Transfer, on_delete=models.PROTECT, null=True, blank=True, related_name="entries"
    )
    amount = money_field()
    balance_after = money_field()
    # Deposits are idempotent too: unique per account, kept by LedgerKey.
    idempotency_key = models.CharField(  # noqa: DJ001 (NULL: no key)
        max_length=IDEMPOTENCY_KEY_MAX, null=True, blank=True
    )
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        ordering = ["-pk"]
        verbose_name_plural = "ledger entries"
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="ledger_amount_non_zero"),
            models.CheckConstraint(
                condition=Q(balance_after__gte=0), name="ledger_balance_after_non_negative"
            ),
        ]
        indexes = [models.Index(fields=["account", "-id"], name="ledger_account_newest")]

    def __str__(self):
        return f"{self.amount:+} on {self.account_id}"


class LedgerKey(models.Model):
    """A deposit's idempotency key, unique per account across every partition of the ledger.

    Its primary key is the pair (account, key): a second entry with the same key fails the INSERT
    of its key row, and so the INSERT of the entry, since a trigger on the ledger writes the key row
    in the entry's own transaction (accounts/migrations/0003). ``entry_id`` and ``entry_created_at``
    find the entry again reading one partition of the ledger. Written only by that trigger.
    """

    pk = models.CompositePrimaryKey("account_id", "idempotency_key")
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+")
    idempotency_key = models.CharField(max_length=IDEMPOTENCY_KEY_MAX)
    entry_id = models.BigIntegerField()
    entry_created_at = models.DateTimeField()

    def __str__(self):
        return f"{self.idempotency_key} on {self.account_id}: entry {self.entry_id}"
