from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test.utils import CaptureQueriesContext

from orders.demo import customers_seed, orders_seed, products_seed
from orders.models import Customer, Order, OrderItem, Payment, Product
from orders.services import product_update
from tests.factories import user_create
from tests.orders.test_views import big_order

pytestmark = pytest.mark.django_db

CHANGELISTS = ["customer", "product", "order", "orderitem", "payment"]


@pytest.fixture
def admin_client(client):
    client.force_login(user_create("root", is_staff=True, is_superuser=True))
    return client


def queries(client, path):
    """Queries of a warm request: process-wide caches (content types, the catalog) already filled."""
    client.get(path)
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured)


def grow_to(n):
    products_seed(n)
    customers_seed(n)
    orders_seed(n)


@pytest.mark.parametrize("model", CHANGELISTS)
def test_changelists_run_the_same_queries_at_10_and_200_rows(admin_client, model):
    grow_to(10)
    few = queries(admin_client, f"/admin/orders/{model}/")
    grow_to(200)
    many = queries(admin_client, f"/admin/orders/{model}/")
    assert few == many <= 8


def test_order_change_page_runs_the_same_queries_at_10_and_200_items(admin_client):
    small, large = big_order(10), big_order(200)
    few = queries(admin_client, f"/admin/orders/order/{small.pk}/change/")
    assert few == queries(admin_client, f"/admin/orders/order/{large.pk}/change/") <= 12


@pytest.mark.parametrize("model", ["customer", "product"])
def test_change_pages_run_the_same_queries_at_10_and_200_rows(admin_client, model):
    grow_to(10)
    obj = (Customer if model == "customer" else Product).objects.order_by("pk").first()
    path = f"/admin/orders/{model}/{obj.pk}/change/"
    few = queries(admin_client, path)
    grow_to(200)  # more customers, products and orders, many of them this object's
    assert few == queries(admin_client, path) <= 8


def test_stale_product_edit_is_a_message_not_a_lost_edit(admin_client):
    grow_to(1)
    product = Product.objects.get()
    product_update(product_id=product.pk, expected_version=product.version, name="Edited elsewhere")
    response = admin_client.post(
        f"/admin/orders/product/{product.pk}/change/",
        {"name": "Mine", "price": "1.00", "stock": "3", "version": product.version},
        follow=True,
    )
    assert b"Not saved" in response.content
    assert Product.objects.get(pk=product.pk).name == "Edited elsewhere"
    conflict = response.content.decode().split('<table class="conflict">')[1]
    assert "<td>Edited elsewhere</td><td>Mine</td>" in conflict


def test_product_edit_with_the_current_version_saves(admin_client):
    grow_to(1)
    product = Product.objects.get()
    response = admin_client.post(
        f"/admin/orders/product/{product.pk}/change/",
        {"name": "Renamed", "price": "1.00", "stock": "3", "version": product.version},
    )
    assert response.status_code == 302
    product.refresh_from_db()
    assert (product.name, product.stock, product.version) == ("Renamed", 3, 2)
    assert LogEntry.objects.filter(object_id=str(product.pk)).count() == 1


def test_admin_customer_with_an_email_taken_in_another_case_is_a_form_error(admin_client):
    grow_to(1)
    existing = Customer.objects.get()
    response = admin_client.post(
        "/admin/orders/customer/add/",
        {"name": "Twin", "email": f"  {existing.email.upper()}", "region": "north"},
    )
    assert response.status_code == 200
    assert b"exists already" in response.content
    assert Customer.objects.count() == 1


def test_admin_customer_add_and_edit_keep_the_normalized_email(admin_client):
    response = admin_client.post(
        "/admin/orders/customer/add/", {"name": "Eve", "email": "Eve@Example.com", "region": "west"}
    )
    assert response.status_code == 302
    eve = Customer.objects.get(name="Eve")
    assert eve.email_normalized == "eve@example.com"
    response = admin_client.post(
        f"/admin/orders/customer/{eve.pk}/change/",
        {"name": "Eve", "email": "EVE2@example.com", "region": "west"},
    )
    assert response.status_code == 302
    assert Customer.objects.get(pk=eve.pk).email_normalized == "eve2@example.com"


def test_changelists_show_money_with_separators_and_currency(admin_client):
    order = big_order(3)
    Order.objects.filter(pk=order.pk).update(total="12345.60")
    assert "12,345.60\u00a0EUR" in admin_client.get("/admin/orders/order/").content.decode()


def test_order_lines_are_labelled_with_product_names(admin_client):
    order = big_order(2)
    content = admin_client.get(f"/admin/orders/order/{order.pk}/change/").content.decode()
    for item in order.items.select_related("product"):
        assert f"1 × {item.product.name}" in content


def test_a_paid_orders_total_and_status_cannot_be_changed_in_the_admin(admin_client):
    order = big_order(1)
    Order.objects.filter(pk=order.pk).update(status="paid", total="10.00")
    page = admin_client.get(f"/admin/orders/order/{order.pk}/change/").content.decode()
    assert 'name="total"' not in page and 'name="status"' not in page
    admin_client.post(
        f"/admin/orders/order/{order.pk}/change/",
        {
            "status": "cancelled",
            "total": "0.01",
            "customer": order.customer_id,
            "items-TOTAL_FORMS": "0",
            "items-INITIAL_FORMS": "0",
            "payments-TOTAL_FORMS": "0",
            "payments-INITIAL_FORMS": "0",
        },
    )
    order.refresh_from_db()
    assert (order.status, str(order.total)) == ("paid", "10.00")


@pytest.mark.parametrize("price", ["1e3", "1E+2", "1_000", "١٢"])
def test_a_product_price_in_exponent_or_other_digits_is_a_form_error(admin_client, price):
    grow_to(1)
    product = Product.objects.get()
    response = admin_client.post(
        f"/admin/orders/product/{product.pk}/change/",
        {"name": product.name, "price": price, "stock": "3", "version": product.version},
    )
    assert response.status_code == 200
    assert b"in digits with a decimal point" in response.content
    assert Product.objects.get(pk=product.pk).price == product.price


HISTORY = ["order", "orderitem", "payment"]


@pytest.mark.parametrize("model", HISTORY)
def test_orders_lines_and_payments_cannot_be_added_in_the_admin(admin_client, model):
    order = big_order(1)
    assert admin_client.get(f"/admin/orders/{model}/add/").status_code == 403
    data = {"customer": order.customer_id, "status": "paid", "total": "1234.56"}
    assert admin_client.post(f"/admin/orders/{model}/add/", data).status_code == 403
    assert (Order.objects.count(), OrderItem.objects.count(), Payment.objects.count()) == (1, 1, 1)


@pytest.mark.parametrize("model", HISTORY)
def test_orders_lines_and_payments_are_shown_not_edited_nor_deleted(admin_client, model):
    order = big_order(1)
    obj = {"order": order, "orderitem": order.items.get(), "payment": order.payments.get()}[model]
    page = admin_client.get(f"/admin/orders/{model}/{obj.pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content and b"deletelink" not in page.content
    changed = {"quantity": "9", "amount": "0.01", "total": "0.01", "status": "cancelled"}
    assert admin_client.post(f"/admin/orders/{model}/{obj.pk}/change/", changed).status_code == 403
    for path in (f"/admin/orders/{model}/{obj.pk}/delete/",):
        assert admin_client.get(path).status_code == 403
        assert admin_client.post(path, {"post": "yes"}).status_code == 403
    bulk = {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"}
    admin_client.post(f"/admin/orders/{model}/", bulk)
    assert (Order.objects.count(), OrderItem.objects.count(), Payment.objects.count()) == (1, 1, 1)
    assert order.items.get().quantity == 1 and order.payments.get().amount == Decimal("1.00")


def test_an_order_is_shown_with_its_total_in_euros(admin_client):
    order = big_order(2)
    Order.objects.filter(pk=order.pk).update(total="1234.50")
    page = admin_client.get(f"/admin/orders/order/{order.pk}/change/").content.decode()
    assert "1,234.50\u00a0EUR" in page


def test_saving_a_product_leaves_its_description_alone_when_it_was_not_edited(admin_client):
    """A browser sends a textarea's line breaks as CRLF: the description counted as changed (and
    was rewritten with CRLF) by every save of the product."""
    grow_to(1)
    product = Product.objects.get()
    product_update(product_id=product.pk, expected_version=product.version, description="a\n\nb")
    product.refresh_from_db()
    data = {"name": "Renamed", "description": "a\r\n\r\nb", "price": "1.00", "stock": "3"}
    response = admin_client.post(
        f"/admin/orders/product/{product.pk}/change/", data | {"version": product.version}
    )
    assert response.status_code == 302
    product.refresh_from_db()
    assert (product.name, product.description) == ("Renamed", "a\n\nb")
    change = LogEntry.objects.filter(object_id=str(product.pk)).latest("pk").get_change_message()
    assert "Description" not in change


@pytest.mark.django_db(transaction=True)
def test_a_product_added_in_the_admin_is_in_the_cached_catalog(admin_client):
    """The admin's add form saves the row itself (no service); the cached catalog must not go on
    serving the list from before it, and the row and its history entry commit together."""
    from orders.selectors import product_catalog

    assert product_catalog() == []  # cached, empty
    response = admin_client.post(
        "/admin/orders/product/add/",
        {"sku": "ADM-1", "name": "Added", "price": "4.50", "stock": "3", "version": "1"},
    )
    assert response.status_code == 302, response.content[:500]
    assert [row["sku"] for row in product_catalog()] == ["ADM-1"]
    assert LogEntry.objects.filter(object_id=str(Product.objects.get(sku="ADM-1").pk)).count() == 1
