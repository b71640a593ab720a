from collections import defaultdict
from decimal import Decimal

import pytest
from django.db import transaction

from orders.exceptions import UnknownRegion
from orders.models import Order, OrderStatus, Region
from orders.selectors import order_list, product_catalog, report_daily_sales, report_top_customers
from orders.services import product_restock
from tests.factories import customer_create, product_create


def paid_order(customer, total, status=OrderStatus.PAID):
    return Order.objects.create(customer=customer, total=Decimal(total), status=status)


def expected_top(customers, region=None):
    """The report computed in Python: paid spend per customer, rank within region with ties."""
    spend = defaultdict(lambda: [0, Decimal("0")])
    for order in Order.objects.filter(status=OrderStatus.PAID):
        spend[order.customer_id][0] += 1
        spend[order.customer_id][1] += order.total
    rows = [
        (c.pk, c.name, c.region, *spend[c.pk])
        for c in customers
        if c.pk in spend and region in (None, c.region)
    ]
    ranked = []
    for pk, name, reg, count, total in rows:
        rank = 1 + sum(1 for r in rows if r[2] == reg and r[4] > total)
        ranked.append((pk, name, reg, count, total, rank))
    return sorted(ranked, key=lambda r: (-r[4], r[0]))


@pytest.mark.django_db
def test_top_customers_report_matches_python_including_ties_and_empty_regions():
    north = [customer_create(region="north") for _ in range(4)]
    south = [customer_create(region="south") for _ in range(2)]
    east_without_orders = customer_create(region="east")
    paid_order(north[0], "50.00")
    paid_order(north[0], "25.00")
    paid_order(north[1], "75.00")  # tie with north[0]: both rank 1
    paid_order(north[2], "10.00")
    paid_order(north[3], "999.00", status=OrderStatus.CANCELLED)  # not paid: not counted
    paid_order(south[0], "5.00")
    paid_order(south[1], "500.00")
    customers = [*north, *south, east_without_orders]

    rows = [tuple(vars(r).values()) for r in report_top_customers()]
    assert rows == expected_top(customers)
    assert {r[5] for r in rows if r[0] in (north[0].pk, north[1].pk)} == {1}
    for region in Region.values:
        assert [
            tuple(vars(r).values()) for r in report_top_customers(region=region)
        ] == expected_top(customers, region)
    assert report_top_customers(region="east") == []
    assert report_top_customers(region="west") == []


@pytest.mark.django_db
def test_top_customers_rejects_an_unknown_region():
    with pytest.raises(UnknownRegion):
        report_top_customers(region="north'; DROP TABLE orders_order; --")


@pytest.mark.django_db
def test_daily_sales_counts_paid_orders_per_day_with_empty_days():
    customer = customer_create()
    paid_order(customer, "10.00")
    paid_order(customer, "5.50")
    paid_order(customer, "99.00", status=OrderStatus.CANCELLED)
    days = report_daily_sales(days=7)
    assert len(days) == 7
    assert (days[-1].orders, days[-1].revenue) == (2, Decimal("15.50"))
    assert all(d.orders == 0 and d.revenue == 0 for d in days[:-1])


@pytest.mark.django_db
def test_order_list_pages_by_keyset():
    customer = customer_create()
    ids = [paid_order(customer, "1.00").pk for _ in range(7)]
    first = order_list(limit=3)
    assert [o.pk for o in first] == ids[::-1][:3]
    assert [o.pk for o in order_list(limit=3, after=first[-1].pk)] == ids[::-1][3:6]


@pytest.mark.django_db(transaction=True)
def test_catalog_sees_a_committed_change_at_once():
    product = product_create(stock=3)
    assert product_catalog()[0]["stock"] == 3
    product_restock(product_id=product.pk, quantity=4, expected_version=product.version)
    assert product_catalog()[0]["stock"] == 7


@pytest.mark.django_db(transaction=True)
def test_catalog_is_left_alone_by_a_rolled_back_change(django_assert_num_queries):
    product = product_create(stock=3)
    assert product_catalog()[0]["stock"] == 3
    with pytest.raises(RuntimeError), transaction.atomic():
        # The service's body (its decorator refuses to run nested) in a transaction rolled back.
        product_restock.__wrapped__(
            product_id=product.pk, quantity=4, expected_version=product.version
        )
        raise RuntimeError("abort")
    with django_assert_num_queries(0):  # still served from the cache: not invalidated
        assert product_catalog()[0]["stock"] == 3


@pytest.mark.django_db(transaction=True)
def test_a_slow_reader_cannot_put_the_catalog_from_before_a_change_back():
    """A reader loads the products, then a restock commits and invalidates the catalog, then the
    reader stores what it loaded. That stale copy must never be served: it went under the old
    generation's key, which nobody reads any more. (With one key and a delete on invalidation,
    the slow reader's store would put the old stock back for everyone, for the cache's lifetime.)"""
    from django.db import connection

    from tests.helpers import in_threads

    product = product_create(stock=3)
    restocked = []

    def restock_after_the_read(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if '"orders_product"' in sql and not restocked:
            # Another request, on its own connection: commits, then invalidates (on_commit).
            restocked.extend(
                in_threads(
                    1,
                    lambda _: product_restock(
                        product_id=product.pk, quantity=4, expected_version=product.version
                    ),
                )
            )
        return result

    with connection.execute_wrapper(restock_after_the_read):
        assert product_catalog()[0]["stock"] == 3  # what the slow reader loaded, and stored
    assert restocked
    assert product_catalog()[0]["stock"] == 7
