from django import forms
from django.contrib import admin

from dbops.admin_mixins import OptimisticLockAdminMixin
from orders.exceptions import DuplicateCustomer, OrdersError
from orders.models import Customer, Order, OrderItem, Payment, Product, email_normalize
from orders.services import customer_create, customer_update, product_update


class CustomerAdminForm(forms.ModelForm):
    class Meta:
        model = Customer
        fields = ["name", "email", "region", "user"]

    def clean_email(self):
        email = self.cleaned_data["email"]
        taken = Customer.objects.filter(email_normalized=email_normalize(email)).exclude(
            pk=self.instance.pk
        )
        if taken.exists():
            raise forms.ValidationError(DuplicateCustomer(email).args[0])
        return email


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    form = CustomerAdminForm
    list_display = ["id", "name", "email", "region", "user", "created_at"]
    list_select_related = ["user"]
    list_filter = ["region"]
    search_fields = ["name", "email"]
    autocomplete_fields = ["user"]

    def save_model(self, request, obj, form, change):
        # Through the services, which keep email_normalized in step with email.
        data = {name: form.cleaned_data[name] for name in ("name", "email", "region", "user")}
        saved = customer_update(customer_id=obj.pk, **data) if change else customer_create(**data)
        obj.pk, obj.email_normalized, obj.created_at = (
            saved.pk,
            saved.email_normalized,
            saved.created_at,
        )


class ProductAdminForm(forms.ModelForm):
    # The version the editor loaded; the save applies only while it is still current.
    version = forms.IntegerField(
        widget=forms.HiddenInput, min_value=1, max_value=2_147_483_647, required=False
    )

    class Meta:
        model = Product
        fields = ["sku", "name", "price", "stock", "version"]


@admin.register(Product)
class ProductAdmin(OptimisticLockAdminMixin, admin.ModelAdmin):
    form = ProductAdminForm
    list_display = ["sku", "name", "price", "stock", "version", "updated_at"]
    search_fields = ["sku", "name"]

    def get_readonly_fields(self, request, obj=None):
        return ["sku"] if obj else []

    optimistic_fields = frozenset({"name", "price", "stock"})
    conflict_errors = (OrdersError,)

    def optimistic_update(self, obj, *, expected_version, changes):
        return product_update(product_id=obj.pk, expected_version=expected_version, **changes)


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
    fields = readonly_fields = ["product", "quantity", "unit_price"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("product")


class PaymentInline(ReadOnlyInline):
    model = Payment
    fields = readonly_fields = ["method", "amount", "status", "reference", "created_at"]


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["id", "created_at", "customer", "status", "total"]
    list_select_related = ["customer"]
    list_filter = ["status"]
    search_fields = ["customer__email", "customer__name"]
    autocomplete_fields = ["customer"]
    readonly_fields = ["created_at"]
    inlines = [OrderItemInline, PaymentInline]
    show_full_result_count = False


@admin.register(OrderItem)
class OrderItemAdmin(admin.ModelAdmin):
    list_display = ["id", "order", "product", "quantity", "unit_price"]
    list_select_related = ["order", "product"]
    autocomplete_fields = ["order", "product"]
    show_full_result_count = False


@admin.register(Payment)
class PaymentAdmin(admin.ModelAdmin):
    list_display = ["id", "order", "method", "amount", "status", "created_at"]
    list_select_related = ["order"]
    list_filter = ["method", "status"]
    autocomplete_fields = ["order"]
    show_full_result_count = False
