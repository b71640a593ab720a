from django import forms

from accounts.selectors import account_list
from core.forms import AmountField, IdempotencyKeyField
from core.money import money_format


class AccountChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        return f"{obj.name} · {money_format(obj.balance, obj.currency)}"


class TransferForm(forms.Form):
    source = AccountChoiceField(queryset=None, label="From")
    target = AccountChoiceField(queryset=None, label="To")
    amount = AmountField()
    memo = forms.CharField(max_length=200, required=False)
    idempotency_key = IdempotencyKeyField()

    def __init__(self, *args, owner, **kwargs):
        super().__init__(*args, **kwargs)
        # Only the person's own accounts are valid choices; anything else is "not a valid choice".
        self.fields["source"].queryset = account_list(owner=owner)
        self.fields["target"].queryset = account_list(owner=owner)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("source") and cleaned.get("source") == cleaned.get("target"):
            self.add_error("target", "Choose a different account to send to.")
        return cleaned


class AccountEditForm(forms.Form):
    name = forms.CharField(max_length=100)
    # The version the person saw; the update applies only if it is still current.
    version = forms.IntegerField(widget=forms.HiddenInput, min_value=1, max_value=2_147_483_647)
