from django import forms
from django.contrib import admin

from accounts.exceptions import DomainError
from accounts.models import Account, LedgerEntry, Transfer
from accounts.services import account_update
from core.admin import HistoryAdmin, InputCheckedAdminMixin, OptimisticLockAdminMixin
from core.money import money_format


class AccountAdminForm(forms.ModelForm):
    # The version the editor loaded; saving succeeds only while it is still current.
    version = forms.IntegerField(
        widget=forms.HiddenInput, min_value=1, max_value=2_147_483_647, required=False
    )

    class Meta:
        model = Account
        fields = ["owner", "name", "currency", "version"]


@admin.register(Account)
class AccountAdmin(InputCheckedAdminMixin, OptimisticLockAdminMixin, admin.ModelAdmin):
    form = AccountAdminForm
    list_display = ["id", "name", "owner", "currency", "balance_display", "version", "created_at"]
    list_select_related = ["owner"]
    search_fields = ["name", "owner__username"]
    list_filter = ["currency"]
    autocomplete_fields = ["owner"]
    readonly_fields = ["balance"]

    def get_readonly_fields(self, request, obj=None):
        # Balance moves only through services (with a ledger entry); owner and currency are fixed.
        # created_at is the database's (db_default): a new account has none to show yet.
        if obj is None:
            return self.readonly_fields
        return [*self.readonly_fields, "owner", "currency", "created_at"]

    optimistic_fields = frozenset({"name"})
    conflict_errors = (DomainError,)

    @admin.display(description="balance", ordering="balance")
    def balance_display(self, obj):
        return money_format(obj.balance, obj.currency)

    def optimistic_update(self, obj, *, expected_version, changes):
        return account_update(account_id=obj.pk, expected_version=expected_version, **changes)

    def save_model(self, request, obj, form, change):
        if not change:
            # A new account starts empty; money arrives only through the services, with a ledger entry.
            obj.balance = 0
            obj.version = 1
        super().save_model(request, obj, form, change)


@admin.register(Transfer)
class TransferAdmin(HistoryAdmin):
    list_display = [
        "id",
        "created_at",
        "source",
        "target",
        "amount_display",
        "idempotency_key",
        "created_by",
    ]
    list_select_related = ["source", "target", "created_by"]
    search_fields = ["idempotency_key", "memo"]
    show_full_result_count = False

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, obj):
        return money_format(obj.amount, obj.source.currency)  # source is joined: no query


@admin.register(LedgerEntry)
class LedgerEntryAdmin(HistoryAdmin):
    list_display = [
        "id",
        "created_at",
        "account",
        "transfer",
        "amount_display",
        "balance_after_display",
    ]
    list_select_related = ["account", "transfer"]
    show_full_result_count = False

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, obj):
        return money_format(obj.amount, obj.account.currency, signed=True)

    @admin.display(description="balance after", ordering="balance_after")
    def balance_after_display(self, obj):
        return money_format(obj.balance_after, obj.account.currency)
