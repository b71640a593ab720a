from django import forms

from orders.selectors import product_catalog
from orders.services import MAX_QUANTITY

PAYMENT_CHOICES = [("card", "Card"), ("wallet", "Wallet")]


class OrderLineForm(forms.Form):
    product = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    quantity = forms.IntegerField(min_value=1, max_value=MAX_QUANTITY, required=False)

    def __init__(self, *args, catalog, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["product"].choices = [("", "—")] + [
            (p["id"], f"{p['sku']} · {p['name']} · {p['price']} ({p['stock']} in stock)")
            for p in catalog
        ]

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("product") and not cleaned.get("quantity") and "quantity" not in self.errors:
            self.add_error("quantity", "Enter a quantity for this product.")
        if cleaned.get("quantity") and not cleaned.get("product") and "product" not in self.errors:
            self.add_error("product", "Choose a product for this quantity.")
        return cleaned


class BaseOrderLineFormSet(forms.BaseFormSet):
    def get_form_kwargs(self, index):
        # The cached catalog, read once for every row: no query per row.
        if not hasattr(self, "_catalog"):
            self._catalog = product_catalog()
        return {"catalog": self._catalog}

    def clean(self):
        if any(self.errors):
            return
        seen = set()
        for form in self.forms:
            product = form.cleaned_data.get("product")
            if product in seen:
                raise forms.ValidationError("The same product appears on two lines; combine them.")
            if product:
                seen.add(product)
        if not seen:
            raise forms.ValidationError("Add at least one product.")

    def lines(self) -> list[tuple[int, int]]:
        return [
            (f.cleaned_data["product"], f.cleaned_data["quantity"])
            for f in self.forms
            if f.cleaned_data.get("product")
        ]


OrderLineFormSet = forms.formset_factory(
    OrderLineForm, formset=BaseOrderLineFormSet, extra=4, max_num=20, absolute_max=20
)


class OrderForm(forms.Form):
    payment_methods = forms.MultipleChoiceField(
        choices=PAYMENT_CHOICES,
        initial=["card", "wallet"],
        widget=forms.CheckboxSelectMultiple,
        help_text="Tried in this order; the next is used when one is declined.",
    )
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=64)
