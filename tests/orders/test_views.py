import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from orders.demo import customers_seed, orders_seed, products_seed
from orders.models import Order, OrderItem, Payment, Product
from orders.services import order_place
from tests.factories import customer_create, product_create, user_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    user = user_create("boss", is_staff=True)
    client.force_login(user)
    customer_create(user=user)
    return client


@pytest.fixture
def shopper(client):
    user = user_create("carol")
    client.force_login(user)
    client.customer = customer_create(user=user)
    return client


def queries(client, path):
    """Queries of a warm request: process-wide caches (content types, the catalog) already filled."""
    client.get(path)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200, response.status_code
    return len(captured)


def grow_to(orders):
    products_seed(30)
    customers_seed(20)
    orders_seed(orders)


def big_order(items):
    """One order with ``items`` lines, written in bulk."""
    customer = customer_create()
    order = Order.objects.create(customer=customer, total=0)
    products = [product_create(stock=1) for _ in range(items)]
    OrderItem.objects.bulk_create(
        [OrderItem(order=order, product=p, quantity=1, unit_price=p.price) for p in products]
    )
    Payment.objects.create(order=order, method="card", amount="1.00")
    return order


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/orders/", 4),  # session, user, orders + customers + item counts, items + products
        ("/orders/customers/{customer}/", 5),  # + the customer with paid count and spend
        ("/orders/reports/top-customers/", 4),  # session, user, top customers, daily sales
        (
            "/orders/new/",
            3,
        ),  # session, user, the shopper's customer; the catalog comes from the cache
    ],
)
def test_pages_run_the_same_queries_at_10_and_200_orders(staff, path, expected):
    grow_to(10)
    customer = Order.objects.values_list("customer_id", flat=True).first()
    few = queries(staff, path.format(customer=customer))
    grow_to(200)
    assert Order.objects.count() == 200
    many = queries(staff, path.format(customer=customer))
    assert few == many == expected


def test_order_page_runs_the_same_queries_at_10_and_200_items(staff):
    small, large = big_order(10), big_order(200)
    assert queries(staff, f"/orders/{small.pk}/") == queries(staff, f"/orders/{large.pk}/") == 5


def test_a_customer_sees_only_their_own_orders(shopper):
    mine = order_place(customer_id=shopper.customer.pk, lines=[(product_create().pk, 1)])
    theirs = order_place(customer_id=customer_create().pk, lines=[(product_create().pk, 1)])
    assert [o.pk for o in shopper.get("/orders/").context["orders"]] == [mine.pk]
    assert shopper.get(f"/orders/{mine.pk}/").status_code == 200
    assert shopper.get(f"/orders/{theirs.pk}/").status_code == 404
    assert shopper.get(f"/orders/customers/{theirs.customer_id}/").status_code == 404
    assert shopper.get(f"/orders/customers/{mine.customer_id}/").status_code == 200


def test_reports_are_for_staff_only(shopper):
    assert shopper.get("/orders/reports/top-customers/").status_code == 403


@pytest.mark.parametrize(
    "region, status", [("north", 200), ("", 200), ("atlantis", 400), ("north' OR 1=1 --", 400)]
)
def test_report_region_filter(staff, region, status):
    assert staff.get(f"/orders/reports/top-customers/?region={region}").status_code == status


@pytest.mark.parametrize("cursor", ["x", "-4", "0", "1e3", "9" * 30])
def test_malformed_cursor_is_a_400(staff, cursor):
    assert staff.get(f"/orders/?after={cursor}").status_code == 400


def order_form(lines, key="order-key-1", methods=("card", "wallet")):
    data = {
        "lines-TOTAL_FORMS": str(max(4, len(lines))),
        "lines-INITIAL_FORMS": "0",
        "lines-MIN_NUM_FORMS": "0",
        "lines-MAX_NUM_FORMS": "20",
        "payment_methods": list(methods),
        "idempotency_key": key,
    }
    for i, (product, quantity) in enumerate(lines):
        data[f"lines-{i}-product"] = str(product)
        data[f"lines-{i}-quantity"] = str(quantity)
    return data


def test_order_form_places_an_order_once_even_if_submitted_twice(shopper):
    product = product_create(stock=5)
    for _ in range(2):
        response = shopper.post("/orders/new/", order_form([(product.pk, 2)]))
        assert response.status_code == 302
    assert Order.objects.count() == 1
    assert Product.objects.get(pk=product.pk).stock == 3


@pytest.mark.parametrize(
    "lines",
    [
        [("P", 0)],
        [("P", -2)],
        [("P", "two")],
        [("P", 6)],
        [(999_999_999, 1)],
        [("P", 1), ("P", 1)],
        [("P", "")],
        [],
    ],
)
def test_bad_order_lines_are_form_errors_and_write_nothing(shopper, lines):
    product = product_create(stock=5)
    lines = [(product.pk if p == "P" else p, q) for p, q in lines]
    response = shopper.post("/orders/new/", order_form(lines))
    assert response.status_code == 400
    assert Order.objects.count() == 0 and OrderItem.objects.count() == 0
    assert Product.objects.get(pk=product.pk).stock == 5


def test_payment_failure_is_a_form_error(shopper, settings):
    settings.PAYMENT_DECLINE_METHODS = ["card", "wallet"]
    product = product_create(stock=5)
    response = shopper.post("/orders/new/", order_form([(product.pk, 1)]))
    assert response.status_code == 400
    assert b"Payment failed" in response.content
    assert Order.objects.count() == 0 and Payment.objects.count() == 0


def test_login_without_customer_profile_cannot_order(client):
    client.force_login(user_create())
    assert client.get("/orders/new/").status_code == 403
    assert client.get("/orders/").status_code == 404
