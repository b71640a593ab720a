import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
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
        # session, user with its customer profile joined, the order of the form's key (none yet);
        # the catalog comes from the cache
        ("/orders/new/?key=k", 3),
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


def test_new_order_page_loads_the_catalog_once_when_the_cache_is_cold(staff):
    grow_to(10)
    assert queries(staff, "/orders/new/?key=k") == 3
    cache.clear()
    with CaptureQueriesContext(connection) as captured:
        response = staff.get("/orders/new/?key=k")
    assert len(captured) == 4 == int(response["X-DB-Query-Count"])
    assert 'data-db-query-count="4"' in response.content.decode()


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


@pytest.mark.parametrize("cursor", ["x", "-4", "0", "1e3", "9" * 30, "²", "①", "١٢", "%00"])
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


def test_a_new_order_form_gets_an_address_of_its_own_with_a_fresh_key(shopper):
    first, second = (shopper.get("/orders/new/") for _ in range(2))
    assert first.status_code == second.status_code == 302
    assert first["Location"].startswith("/orders/new/?key=")
    assert first["Location"] != second["Location"]
    form = shopper.get(first["Location"]).context["form"]
    assert form.initial["idempotency_key"] == first["Location"].split("key=")[1]


def test_back_to_a_placed_order_form_shows_the_order_and_placing_again_orders_nothing(shopper):
    """Back after placing: the browser asks for the form's address again (it is never stored)."""
    a, b = product_create(stock=5), product_create(stock=5)
    address = "/orders/new/?key=order-key-1"
    assert shopper.post(address, order_form([(a.pk, 2), (b.pk, 1)])).status_code == 302
    order = Order.objects.get()

    back = shopper.get(address)
    assert back.status_code == 200 and back.context["placed"] == order
    assert [f.initial for f in back.context["lines"].forms] == [
        {"product": a.pk, "quantity": 2},
        {"product": b.pk, "quantity": 1},
    ]
    assert b"This form was sent already:</strong> order" in back.content

    # Placed again, even with a line changed meanwhile: the first order, nothing more.
    again = shopper.post(address, order_form([(a.pk, 1)]), follow=True)
    assert again.redirect_chain[-1][0] == f"/orders/{order.pk}/"
    assert "Nothing was ordered again." in again.content.decode()
    assert Order.objects.count() == 1
    assert Product.objects.get(pk=a.pk).stock == 3


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


@pytest.mark.parametrize("path", ["/orders/", "/orders/new/", "/orders/1/"])
def test_login_without_customer_profile_gets_a_page_that_says_why(client, path):
    client.force_login(user_create())
    response = client.get(path)
    assert response.status_code == 200
    assert b"Your login has no customer profile" in response.content
    assert b'href="/orders/"' not in response.content  # the navigation does not offer orders


def test_login_without_customer_profile_cannot_place_an_order(client):
    client.force_login(user_create())
    product = product_create(stock=5)
    response = client.post("/orders/new/", order_form([(product.pk, 1)]))
    assert b"Your login has no customer profile" in response.content
    assert Order.objects.count() == 0 and Product.objects.get(pk=product.pk).stock == 5


def test_add_a_line_without_javascript_keeps_what_was_typed_and_writes_nothing(shopper):
    product = product_create(stock=5)
    data = order_form([(product.pk, 2)]) | {"lines-TOTAL_FORMS": "1", "add_line": "1"}
    response = shopper.post("/orders/new/", data)
    assert response.status_code == 200
    lines = response.context["lines"]
    assert len(lines.forms) == 2
    assert lines.forms[0].initial == {"product": str(product.pk), "quantity": "2"}
    assert response.context["form"].initial["idempotency_key"] == "order-key-1"
    assert b"errorlist" not in response.content
    assert Order.objects.count() == 0


def test_remove_a_line_without_javascript_drops_that_line(shopper):
    a, b, c = product_create(), product_create(), product_create()
    data = order_form([(a.pk, 1), (b.pk, 2), (c.pk, 3)]) | {
        "lines-TOTAL_FORMS": "3",
        "remove_line": "1",
    }
    lines = shopper.post("/orders/new/", data).context["lines"]
    assert [f.initial["product"] for f in lines.forms] == [str(a.pk), str(c.pk)]
    assert Order.objects.count() == 0


def test_a_declined_card_falls_back_to_the_wallet_and_says_so(shopper):
    product = product_create(stock=5, price="1500.00")
    data = order_form([(product.pk, 1)]) | {"decline": ["card"]}
    response = shopper.post("/orders/new/", data, follow=True)
    order = Order.objects.get()
    assert list(order.payments.values_list("method", flat=True)) == ["wallet"]
    message = str(list(response.context["messages"])[0])
    assert message.startswith(
        f"Order #{order.pk} placed: card declined (declined by the simulator), "
        "1,500.00\u00a0EUR paid with wallet; one transaction of "
    )
    assert message.endswith(" queries.")


def test_declines_are_offered_only_with_the_simulated_gateway(shopper, settings):
    assert b'name="decline"' in shopper.get("/orders/new/", follow=True).content
    settings.PAYMENT_GATEWAY = "tests.orders.test_views.RealGateway"
    assert b'name="decline"' not in shopper.get("/orders/new/", follow=True).content


class RealGateway:
    def charge(self, *, method, amount, reference):
        return "real"


def test_orders_list_pages_both_ways_with_controls_above_and_below(staff):
    grow_to(120)
    first = staff.get("/orders/")
    page = first.context["page"]
    assert len(page.items) == 50 and page.newer is None
    assert first.content.decode().count('rel="next"') == 2  # above and below the table
    second = staff.get(f"/orders/?after={page.older}").context["page"]
    back = staff.get(f"/orders/?before={second.newer}").context["page"]
    assert [o.pk for o in back.items] == [o.pk for o in page.items]


def test_orders_past_the_end_say_no_more(staff):
    grow_to(3)
    oldest = Order.objects.order_by("pk").first()
    response = staff.get(f"/orders/?after={oldest.pk}")
    assert b"No more orders." in response.content and b"No orders yet" not in response.content


def test_report_shows_region_labels_and_the_cap(staff):
    grow_to(30)
    content = staff.get("/orders/reports/top-customers/").content.decode()
    assert '<td class="hide-narrow">North</td>' in content and ">north<" not in content
    assert "The 100 customers who spent the most" in content


def test_daily_sales_follow_the_region_filter(staff):
    grow_to(60)
    everywhere = staff.get("/orders/reports/top-customers/").context["daily"]
    north = staff.get("/orders/reports/top-customers/?region=north").context["daily"]
    paid_north = Order.objects.filter(status="paid", customer__region="north")
    recent = [d.orders for d in north]
    assert sum(recent) == paid_north.filter(created_at__date__gte=north[0].day).count()
    assert sum(d.orders for d in everywhere) > sum(recent) > 0


def test_money_stock_and_dates_read_alike_on_the_site_and_in_the_admin(staff):
    """108.10 without a currency, 1285 beside 1,285, 2026-12-05 07:16 beside Dec. 5, 2026,
    7:16 a.m.: one format for each, the time zone shown."""
    from datetime import UTC, datetime

    product = product_create(stock=1285, price="108.10")
    order = big_order(1)
    Order.objects.filter(pk=order.pk).update(created_at=datetime(2026, 12, 5, 7, 16, tzinfo=UTC))
    User = get_user_model()
    User.objects.filter(username="boss").update(is_superuser=True)
    pages = {
        "/orders/products/": ["108.10\u00a0EUR", "1,285"],
        f"/orders/products/{product.pk}/": ["108.10\u00a0EUR", "1,285 in stock"],
        "/admin/orders/product/": ["108.10\u00a0EUR", "1,285"],
        "/orders/": ["2026-12-05 07:16 UTC"],
        f"/orders/{order.pk}/": ["2026-12-05 07:16 UTC"],
        "/admin/orders/order/": ["2026-12-05 07:16 UTC"],
        f"/admin/orders/order/{order.pk}/change/": ["2026-12-05 07:16 UTC"],
    }
    for path, shown in pages.items():
        content = staff.get(path).content.decode()
        for text in shown:
            assert text in content, (path, text)
        assert "Dec. 5, 2026" not in content, path


def test_products_page_with_the_pager_of_every_list(staff):
    from orders.selectors import PRODUCT_PAGE_SIZE

    products_seed(PRODUCT_PAGE_SIZE + 5)
    first = staff.get("/orders/products/")
    assert "_pager.html" in [t.name for t in first.templates]
    page = first.context["page"]
    assert len(page.items) == PRODUCT_PAGE_SIZE and page.newer is None
    assert first.content.decode().count('rel="next"') == 2  # above and below the table
    second = staff.get(f"/orders/products/?after={page.older}").context["page"]
    assert len(second.items) == 5 and second.older is None
    back = staff.get(f"/orders/products/?before={second.newer}").context["page"]
    assert [p.pk for p in back.items] == [p.pk for p in page.items]
    assert staff.get("/orders/products/?after=1&before=2").status_code == 400
