from decimal import Decimal

from django import forms
from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path

from core.admin import (
    HistoryAdmin,
    InputCheckedAdminMixin,
    OptimisticLockAdminMixin,
    ServiceAdminMixin,
)
from core.forms import AmountField, MultilineTextField
from dbops.transactions import ServiceTransactionFailed
from orders.exceptions import DomainError, DuplicateCustomer, ImportFileError, ImportStopped
from orders.imports import UPLOAD_MAX_BYTES, products_import
from orders.models import (
    Customer,
    Order,
    OrderItem,
    Payment,
    PriceRaiseRun,
    Product,
    email_normalize,
)
from orders.money import order_money
from orders.selectors import catalog_invalidate
from orders.services import customer_create, customer_update, product_update


class CustomerAdminForm(forms.ModelForm):
    # Set by CustomerAdmin when the unique constraint refused this email after the check below had
    # passed (another admin saved it in between).
    refused_email: str | None = None

    class Meta:
        model = Customer
        fields = ["name", "email", "region", "user"]

    def clean_email(self):
        email = self.cleaned_data["email"]
        taken = Customer.objects.filter(email_normalized=email_normalize(email)).exclude(
            pk=self.instance.pk
        )
        refused = self.refused_email is not None and email_normalize(
            self.refused_email
        ) == email_normalize(email)
        if refused or taken.exists():
            raise forms.ValidationError(DuplicateCustomer(email).args[0])
        return email


@admin.register(Customer)
class CustomerAdmin(InputCheckedAdminMixin, ServiceAdminMixin, admin.ModelAdmin):
    form = CustomerAdminForm
    list_display = ["id", "name", "email", "region", "user", "created_at"]
    list_select_related = ["user"]
    list_filter = ["region"]
    search_fields = ["name", "email"]
    autocomplete_fields = ["user"]

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DuplicateCustomer as exc:
            # Two admins saved the same email at once: both passed the form's check, and the unique
            # constraint refused the second (its transaction has rolled back). Render the form
            # again with that email refused, so the person sees the same form error as usual.
            request.customer_email_refused = exc.email
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        refused = getattr(request, "customer_email_refused", None)
        if refused is not None:
            form = type(form.__name__, (form,), {"refused_email": refused})
        return form

    def save_model(self, request, obj, form, change):
        # Through the services, which keep email_normalized in step with email.
        data = {name: form.cleaned_data[name] for name in ("name", "email", "region", "user")}
        saved = customer_update(customer_id=obj.pk, **data) if change else customer_create(**data)
        obj.pk, obj.email_normalized, obj.created_at = (
            saved.pk,
            saved.email_normalized,
            saved.created_at,
        )


class ProductChangeList(ChangeList):
    def get_queryset(self, request, exclude_parameters=None):
        # The list shows no description: leave the large column out (the change page loads it).
        return super().get_queryset(request, exclude_parameters).defer("description")


class ProductAdminForm(forms.ModelForm):
    # Digits and a decimal point: Django's own field read "1e3" as 1,000.
    price = AmountField(min_value=Decimal("0.00"))
    description = MultilineTextField(required=False)
    # The version the editor loaded; the save applies only while it is still current.
    version = forms.IntegerField(
        widget=forms.HiddenInput, min_value=1, max_value=2_147_483_647, required=False
    )

    class Meta:
        model = Product
        fields = ["sku", "name", "description", "price", "stock", "version"]


class ProductImportForm(forms.Form):
    file = forms.FileField(
        label="CSV file", help_text="UTF-8, header sku,name,price,stock (optionally description)."
    )
    dry_run = forms.BooleanField(
        required=False, label="Check only: report what would change, write nothing"
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["file"].help_text += f" At most {filesizeformat(UPLOAD_MAX_BYTES)}."

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > UPLOAD_MAX_BYTES:
            raise forms.ValidationError(
                f"The file is {filesizeformat(upload.size)}; at most "
                f"{filesizeformat(UPLOAD_MAX_BYTES)} here. Import larger files with: "
                "python manage.py import_products FILE.csv --copy"
            )
        return upload


# Rejected lines shown on the page; the count says how many more there are.
IMPORT_REJECTS_SHOWN = 200


@admin.register(Product)
class ProductAdmin(InputCheckedAdminMixin, OptimisticLockAdminMixin, admin.ModelAdmin):
    form = ProductAdminForm
    list_display = ["sku", "name", "price_display", "stock_display", "version", "updated_at"]
    search_fields = ["sku", "name"]

    @admin.display(description="price", ordering="price")
    def price_display(self, obj):
        return order_money(obj.price)

    @admin.display(description="stock", ordering="stock")
    def stock_display(self, obj):
        return f"{obj.stock:,}"  # 1,285, as the site shows it

    def get_changelist(self, request, **kwargs):
        return ProductChangeList

    def get_readonly_fields(self, request, obj=None):
        return ["sku"] if obj else []

    optimistic_fields = frozenset({"name", "description", "price", "stock"})
    conflict_errors = (DomainError,)

    def optimistic_update(self, obj, *, expected_version, changes):
        return product_update(product_id=obj.pk, expected_version=expected_version, **changes)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:
            # product_update invalidates the cached catalog for a change; a new product too.
            transaction.on_commit(catalog_invalidate)

    def get_urls(self):
        # admin_view: staff only, CSRF-protected, never cached.
        view = self.admin_site.admin_view(self.import_view)
        return [path("import/", view, name="orders_product_import"), *super().get_urls()]

    def import_view(self, request):
        """Upload a CSV file and run the same import as ``manage.py import_products``."""
        if not (self.has_add_permission(request) and self.has_change_permission(request)):
            raise PermissionDenied
        form = ProductImportForm(request.POST or None, request.FILES or None)
        report = error = None
        status = 200
        if request.method == "POST" and form.is_valid():
            try:
                report = products_import(
                    file=form.cleaned_data["file"], dry_run=form.cleaned_data["dry_run"]
                )
            except (ImportFileError, ImportStopped) as exc:
                error = str(exc)
                # A batch that gave up waiting for rows other transactions held is the busy case
                # every page answers 409; the stop's message, not BUSY_MESSAGE ("nothing was
                # changed"), since the batches before it are committed: it says which, and how
                # to finish. Anything else the file or the database refused is a 400.
                busy = isinstance(exc.__cause__, ServiceTransactionFailed)
                status = 409 if busy else 400
        elif request.method == "POST":
            status = 400
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Import products from a CSV file",
            "form": form,
            "report": report,
            "error": error,
            "rejects": report.rejects[:IMPORT_REJECTS_SHOWN] if report else [],
            "rejects_hidden": max(0, len(report.rejects) - IMPORT_REJECTS_SHOWN) if report else 0,
        }
        return TemplateResponse(request, "admin/orders/product/import.html", context, status=status)


class ReadOnlyInline(admin.TabularInline):
    """Placed orders are history: their lines and payments are shown, not edited."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class OrderItemInline(ReadOnlyInline):
    model = OrderItem
    fields = readonly_fields = ["product_name", "sku", "quantity", "unit_price_display"]
    verbose_name = "line"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("product").defer("product__description")

    @admin.display(description="product")
    def product_name(self, obj):
        return obj.product.name

    @admin.display(description="SKU")
    def sku(self, obj):
        return obj.product.sku

    @admin.display(description="unit price")
    def unit_price_display(self, obj):
        return order_money(obj.unit_price)


class PaymentInline(ReadOnlyInline):
    model = Payment
    fields = readonly_fields = ["method", "amount_display", "status", "reference", "created_at"]

    @admin.display(description="amount")
    def amount_display(self, obj):
        return order_money(obj.amount)


# Orders, their lines and their payments change only through the services: order_place takes the
# stock, writes the lines and captures the payment in one transaction. The admin shows them and
# changes nothing: an "add order" here made a paid order with no lines and no payment, an edited
# line or payment no longer matched what was charged, and a delete cascaded the captured payment
# and returned no stock. Undoing an order is a cancellation (refund the payment, return the stock,
# keep the history), which needs the gateway's refund: a service of its own, not a delete.


@admin.register(Order)
class OrderAdmin(HistoryAdmin):
    list_display = ["id", "created_at", "customer_name", "status", "total_display"]
    list_select_related = ["customer"]
    list_filter = ["status"]
    search_fields = ["customer__email", "customer__name"]
    fields = readonly_fields = [
        "customer",
        "status",
        "total_display",
        "idempotency_key",
        "created_at",
    ]
    inlines = [OrderItemInline, PaymentInline]
    show_full_result_count = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("customer")

    @admin.display(description="customer", ordering="customer__name")
    def customer_name(self, obj):
        return obj.customer.name

    @admin.display(description="total", ordering="total")
    def total_display(self, obj):
        return order_money(obj.total)


@admin.register(OrderItem)
class OrderItemAdmin(HistoryAdmin):
    list_display = ["id", "order", "product", "quantity", "unit_price_display"]
    list_select_related = ["order", "product"]
    fields = readonly_fields = ["order", "product", "quantity", "unit_price_display"]
    show_full_result_count = False

    @admin.display(description="unit price", ordering="unit_price")
    def unit_price_display(self, obj):
        return order_money(obj.unit_price)

    def get_queryset(self, request):
        # Each row joins its order and product; the product's description is never shown here.
        return (
            super()
            .get_queryset(request)
            .select_related("order", "product")
            .defer("product__description")
        )


@admin.register(Payment)
class PaymentAdmin(HistoryAdmin):
    list_display = ["id", "order", "method", "amount_display", "status", "created_at"]
    list_select_related = ["order"]
    list_filter = ["method", "status"]
    fields = readonly_fields = [
        "order",
        "method",
        "amount_display",
        "status",
        "reference",
        "created_at",
    ]
    show_full_result_count = False

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, obj):
        return order_money(obj.amount)


@admin.register(PriceRaiseRun)
class PriceRaiseRunAdmin(HistoryAdmin):
    """Price raise runs change only through ``product_prices_raise``, each batch's checkpoint in
    the batch's own transaction: shown here, never edited (a moved ``last_id`` would skip
    products or raise them twice)."""

    list_display = [
        "id",
        "percent",
        "sku_prefix",
        "products",
        "batches",
        "last_id",
        "created_at",
        "updated_at",
        "finished_at",
    ]
    fields = readonly_fields = [
        "percent",
        "sku_prefix",
        "batch_size",
        "last_id",
        "products",
        "batches",
        "created_at",
        "updated_at",
        "finished_at",
    ]
