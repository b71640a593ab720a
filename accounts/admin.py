from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect

from accounts.exceptions import AccountsError, StaleVersion
from accounts.models import Account, LedgerEntry, Transfer
from accounts.services import account_update


class AccountAdminForm(forms.ModelForm):
    # The version the editor loaded; saving succeeds only while it is still current.
    version = forms.IntegerField(
        widget=forms.HiddenInput, min_value=1, max_value=2_147_483_647, required=False
    )

    class Meta:
        model = Account
        fields = ["owner", "name", "currency", "version"]


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    form = AccountAdminForm
    list_display = ["id", "name", "owner", "currency", "balance", "version", "created_at"]
    list_select_related = ["owner"]
    search_fields = ["name", "owner__username"]
    list_filter = ["currency"]
    autocomplete_fields = ["owner"]
    readonly_fields = ["balance", "created_at"]

    def get_readonly_fields(self, request, obj=None):
        # Balance moves only through services (with a ledger entry); owner and currency are fixed.
        return [*self.readonly_fields, "owner", "currency"] if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if not change:
            obj.balance = 0
            obj.version = 1
            super().save_model(request, obj, form, change)
            return
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name == "name"}
        try:
            updated = account_update(
                account_id=obj.pk, expected_version=form.cleaned_data.get("version") or 0, **changes
            )
        except StaleVersion as exc:
            request._account_conflict = exc
        except AccountsError as exc:
            request._account_conflict = exc
        else:
            obj.version = updated.version

    def response_change(self, request, obj):
        conflict = getattr(request, "_account_conflict", None)
        if conflict is not None:
            self.message_user(request, f"Not saved: {conflict}", level=messages.ERROR)
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)

    def log_change(self, request, obj, message):
        if getattr(request, "_account_conflict", None) is None:
            super().log_change(request, obj, message)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Money history is append-only: visible in the admin, never edited there."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Transfer)
class TransferAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "created_at",
        "source",
        "target",
        "amount",
        "idempotency_key",
        "created_by",
    ]
    list_select_related = ["source", "target", "created_by"]
    search_fields = ["idempotency_key", "memo"]
    show_full_result_count = False


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "account", "transfer", "amount", "balance_after"]
    list_select_related = ["account", "transfer"]
    show_full_result_count = False
