"""Large columns stay out of list queries: Product.description is loaded only where it is shown."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from zeal import NPlusOneError

from orders.models import Order, OrderItem, Product
from orders.selectors import order_get, order_list, product_list
from orders.services import order_place, product_update
from tests.factories import customer_create, product_create, user_create

pytestmark = pytest.mark.django_db

DESCRIPTION_COLUMN = '"orders_product"."description"'
LONG_TEXT = "Hand-finished oak, oiled twice. " * 120  # about 4 KB, as the demo data


@pytest.fixture
def orders_with_described_products():
    products = [product_create(description=LONG_TEXT) for _ in range(3)]
    customer = customer_create()
    for _ in range(3):
        order = Order.objects.create(customer=customer, total=0)
        OrderItem.objects.bulk_create(
            [OrderItem(order=order, product=p, quantity=1, unit_price=p.price) for p in products]
        )
    return products


def sql_of(call):
    with CaptureQueriesContext(connection) as captured:
        result = call()
    return result, [q["sql"] for q in captured.captured_queries]


def test_orders_list_selects_no_product_description(orders_with_described_products):
    orders, sql = sql_of(lambda: order_list())
    assert len(sql) == 2  # orders with customers and counts; items with products
    assert all(DESCRIPTION_COLUMN not in q for q in sql), sql
    assert '"orders_product"."name"' in sql[1]
    assert [item.product.name for order in orders for item in order.items.all()]


def test_order_page_selects_no_product_description(orders_with_described_products):
    order = Order.objects.first()
    _, sql = sql_of(lambda: order_get(order_id=order.pk))
    assert all(DESCRIPTION_COLUMN not in q for q in sql), sql


def test_product_list_selects_no_description(orders_with_described_products):
    products, sql = sql_of(lambda: list(product_list()))
    assert len(products) == 3 and len(sql) == 1
    assert DESCRIPTION_COLUMN not in sql[0] and '"orders_product"."price"' in sql[0]


def test_reading_the_description_on_each_listed_product_is_an_n_plus_one(
    orders_with_described_products,
):
    with pytest.raises(NPlusOneError, match=r"orders\.Product\.description"):
        [product.description for product in product_list()]


def test_reading_the_description_on_each_order_line_is_an_n_plus_one(
    orders_with_described_products,
):
    with pytest.raises(NPlusOneError, match=r"orders\.Product\.description"):
        [item.product.description for order in order_list() for item in order.items.all()]


def test_product_page_shows_the_description(client, orders_with_described_products):
    client.force_login(user_create())
    product = orders_with_described_products[0]
    response = client.get(f"/orders/products/{product.pk}/")
    assert response.status_code == 200
    assert LONG_TEXT.strip()[:200].encode() in response.content
    assert response["X-DB-Query-Count"] == "3"  # session, user, the product with its description


def test_product_list_page_shows_no_description(client, orders_with_described_products):
    client.force_login(user_create())
    with CaptureQueriesContext(connection) as captured:
        response = client.get("/orders/products/")
    assert response.status_code == 200
    assert b"Hand-finished oak" not in response.content
    assert all(DESCRIPTION_COLUMN not in q["sql"] for q in captured.captured_queries)


def test_admin_lists_leave_the_description_out(client, orders_with_described_products):
    client.force_login(user_create(is_staff=True, is_superuser=True))
    for path in ("/admin/orders/product/", "/admin/orders/orderitem/"):
        with CaptureQueriesContext(connection) as captured:
            assert client.get(path).status_code == 200
        sql = [q["sql"] for q in captured.captured_queries]
        assert any('"orders_product"."name"' in q for q in sql), path
        assert all(DESCRIPTION_COLUMN not in q for q in sql), path
    product = orders_with_described_products[0]
    change = client.get(f"/admin/orders/product/{product.pk}/change/")
    assert LONG_TEXT.strip()[:200].encode() in change.content


def test_description_is_edited_with_optimistic_locking(orders_with_described_products):
    product = orders_with_described_products[0]
    updated = product_update(
        product_id=product.pk, expected_version=product.version, description="Shorter."
    )
    assert (updated.description, updated.version) == ("Shorter.", product.version + 1)
    assert Product.objects.get(pk=product.pk).description == "Shorter."


def test_placing_an_order_selects_no_product_description(orders_with_described_products):
    """order_place reads price, stock and version; a description is a few KB per product line."""
    products = orders_with_described_products
    customer = customer_create()
    order, sql = sql_of(
        lambda: order_place(customer_id=customer.pk, lines=[(p.pk, 1) for p in products])
    )
    assert order.items.count() == 3
    product_reads = [q for q in sql if q.startswith("SELECT") and '"orders_product"' in q]
    assert product_reads, sql  # the products were read, without their descriptions
    assert all(DESCRIPTION_COLUMN not in q for q in sql), product_reads
