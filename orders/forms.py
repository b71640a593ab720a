from django import forms

from core.forms import IdempotencyKeyField
from orders.money import order_money
from orders.payments import RecordingGateway, gateway_is_simulated
from orders.selectors import product_catalog
from orders.services import MAX_QUANTITY

__all__ = ["OrderForm", "OrderLineFormSet", "RecordingGateway", "order_lines_edit"]

PAYMENT_CHOICES = [("card", "Card"), ("wallet", "Wallet")]
MAX_LINES = 20


class OrderLineForm(forms.Form):
    product = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    quantity = forms.IntegerField(min_value=1, max_value=MAX_QUANTITY, required=False)

    def __init__(self, *args, catalog, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["product"].choices = [("", "Choose a product")] + [
            (p["id"], f"{p['name']} · {order_money(p['price'])} · {p['stock']:,} in stock")
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
        return {"catalog": self.catalog}

    @property
    def catalog(self):
        # The cached catalog, read once for every row (and the empty row the script copies).
        if not hasattr(self, "_catalog"):
            self._catalog = product_catalog()
        return self._catalog

    @property
    def empty_form(self):
        form = self.form(
            auto_id=self.auto_id,
            prefix=self.add_prefix("__prefix__"),
            empty_permitted=True,
            use_required_attribute=False,
            renderer=self.renderer,
            catalog=self.catalog,
        )
        self.add_fields(form, None)
        return form

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


# One line to start with; "Add a line" adds more (in the page with JavaScript, or through the
# server without it), up to MAX_LINES.
OrderLineFormSet = forms.formset_factory(
    OrderLineForm,
    formset=BaseOrderLineFormSet,
    extra=0,
    min_num=1,
    max_num=MAX_LINES,
    absolute_max=MAX_LINES,
)


def order_lines_edit(data) -> BaseOrderLineFormSet | None:
    """The no-JavaScript "Add a line" / "Remove" buttons: the lines as typed, one more or one less,
    as a fresh (unbound) form, so half-typed lines are kept and not reported as errors yet.
    None when the form was submitted to place the order."""
    add, remove = "add_line" in data, data.get("remove_line")
    if not add and remove is None:
        return None
    try:
        count = min(int(data.get("lines-TOTAL_FORMS", "0")), MAX_LINES)
    except ValueError:
        count = 0
    rows = [
        {
            "product": data.get(f"lines-{i}-product", ""),
            "quantity": data.get(f"lines-{i}-quantity", ""),
        }
        for i in range(max(count, 0))
    ]
    if remove is not None and remove.isdecimal() and int(remove) < len(rows):
        del rows[int(remove)]
    if add and len(rows) < MAX_LINES:
        rows.append({})
    return OrderLineFormSet(prefix="lines", initial=rows)


class OrderForm(forms.Form):
    payment_methods = forms.MultipleChoiceField(
        choices=PAYMENT_CHOICES,
        initial=["card", "wallet"],
        widget=forms.CheckboxSelectMultiple,
        help_text="Tried in this order; the next is used when one is declined.",
    )
    # For trying the payment fallback by hand; only offered with the simulated gateway.
    decline = forms.MultipleChoiceField(
        choices=PAYMENT_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Simulate a decline of",
        help_text="Each attempt runs in its own savepoint: a declined method leaves no row behind.",
    )
    idempotency_key = IdempotencyKeyField()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not gateway_is_simulated():
            del self.fields["decline"]


class RestockForm(forms.Form):
    quantity = forms.IntegerField(min_value=1, max_value=1_000_000)
    # The version the person saw; the restock applies only while it is still current.
    version = forms.IntegerField(widget=forms.HiddenInput, min_value=1, max_value=2_147_483_647)
