from decimal import Decimal

from django import forms

from accounts.models import MONEY_DIGITS, MONEY_MAX, MONEY_PLACES
from accounts.selectors import account_list


class TransferForm(forms.Form):
    source = forms.ModelChoiceField(queryset=None, label="From")
    target = forms.ModelChoiceField(queryset=None, label="To")
    amount = forms.DecimalField(
        max_digits=MONEY_DIGITS,
        decimal_places=MONEY_PLACES,
        min_value=Decimal("0.01"),
        max_value=MONEY_MAX,
    )
    memo = forms.CharField(max_length=200, required=False)
    # A fresh key per rendered form: a double click or a browser retry of this form sends the same
    # key, and the service moves the money once.
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=64)

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
