"""The admin in a real browser: orders are history there, and add forms show nothing unfilled."""

from django.contrib import admin
from django.urls import reverse

from orders.models import Order


def test_orders_lines_and_payments_are_shown_and_never_changed_in_the_admin(browser, demo):
    browser.login(demo.username, demo.password)
    order = Order.objects.order_by("-pk").first()
    for model in ("order", "orderitem", "payment"):
        browser.get(f"/admin/orders/{model}/")
        assert not browser.find_all(".object-tools .addlink"), f"'Add {model}' offered"
        browser.get(f"/admin/orders/{model}/add/", status=403)
    page = browser.get(f"/admin/orders/order/{order.pk}/change/")
    assert not page.find_all("input[type=submit]") and not page.find_all(".deletelink")
    assert f"{order.total:,.2f} EUR" in page.text("#content")
    lines = page.text(".inline-group")
    for item in order.items.select_related("product"):
        assert item.product.name in lines  # each line names its product
    browser.get(f"/admin/orders/order/{order.pk}/delete/", status=403)
    assert Order.objects.filter(pk=order.pk).exists()


def test_admin_add_forms_show_no_unfilled_database_default(browser, demo):
    """created_at is filled by the database (db_default): an add form showed
    <django.db.models.expressions.DatabaseDefault object at 0x...> where the date would be."""
    browser.login(demo.username, demo.password)
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        if not model_admin.has_add_permission(type("R", (), {"user": demo.user})()):
            continue
        browser.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"))
        content = browser.text("#content")
        assert "DatabaseDefault" not in content and "<django." not in content, opts.label
