import itertools
import random
import threading
from decimal import Decimal

import pytest
from django.db import DatabaseError, connection
from django.test import Client

from orders import services as order_services
from orders.admin import CustomerAdminForm
from orders.exceptions import (
    DuplicateCustomer,
    OutOfStock,
    PriceChanged,
    ProductNotFound,
    StaleVersion,
)
from orders.models import Customer, Order, OrderItem, OrderStatus, Payment, Product
from orders.selectors import catalog_invalidate, product_catalog
from orders.services import customer_create as customer_create_service
from orders.services import order_place
from tests.factories import customer_create, product_create, user_create
from tests.helpers import in_threads, killed_before, queued_behind_a_lock, raw_connection

pytestmark = pytest.mark.django_db(transaction=True)


def test_twenty_buyers_of_ten_items_make_exactly_ten_orders():
    product = product_create(stock=10)
    customers = [customer_create() for _ in range(20)]
    start = threading.Barrier(20)

    def buy(i):
        start.wait()
        try:
            return order_place(customer_id=customers[i].pk, lines=[(product.pk, 1)]).pk
        except OutOfStock:
            return None

    results = in_threads(20, buy)
    assert len([r for r in results if r]) == 10
    assert Order.objects.count() == 10
    assert Product.objects.get(pk=product.pk).stock == 0
    assert OrderItem.objects.filter(product=product).count() == 10


def test_orders_with_the_same_products_in_any_line_order_never_deadlock():
    products = [product_create(stock=1000) for _ in range(4)]
    customer = customer_create()
    start = threading.Barrier(8)

    def buy(i):
        rng = random.Random(i)
        start.wait()
        placed = 0
        for _ in range(10):
            lines = [(p.pk, 1) for p in rng.sample(products, 3)]
            rng.shuffle(lines)
            order_place(customer_id=customer.pk, lines=lines)
            placed += 1
        return placed

    assert sum(in_threads(8, buy)) == 80
    stock = Product.objects.filter(pk__in=[p.pk for p in products]).values_list("stock", flat=True)
    sold = sum(1000 - left for left in stock)
    assert sold == OrderItem.objects.count() == 240


def test_two_concurrent_orders_with_one_key_make_one_order():
    product = product_create(stock=10)
    customer = customer_create()
    start = threading.Barrier(4)

    def buy(i):
        start.wait()
        return order_place(
            customer_id=customer.pk, lines=[(product.pk, 2)], idempotency_key="same-order"
        ).pk

    assert len(set(in_threads(4, buy))) == 1
    assert Order.objects.count() == 1
    assert Product.objects.get(pk=product.pk).stock == 8


def test_killed_connection_mid_order_leaves_nothing_and_a_retry_places_it_once():
    product = product_create(stock=5)
    customer = customer_create()

    def place():
        return order_place(
            customer_id=customer.pk, lines=[(product.pk, 2)], idempotency_key="crash"
        )

    # Killed after the order, its items and the stock change, before the payment and the commit.
    error = killed_before('INSERT INTO "orders_payment"', place)
    assert isinstance(error, DatabaseError)
    assert (Order.objects.count(), OrderItem.objects.count(), Payment.objects.count()) == (0, 0, 0)
    assert Product.objects.get(pk=product.pk).stock == 5

    first, again = place(), place()
    assert first.pk == again.pk and first.status == OrderStatus.PAID
    assert Product.objects.get(pk=product.pk).stock == 3
    assert Payment.objects.count() == 1


def test_a_product_deleted_while_ordering_is_product_not_found():
    product = product_create(stock=5)
    customer = customer_create()

    def delete_before_stock_update(execute, sql, params, many, context):
        if sql.startswith('UPDATE "orders_product"'):
            with raw_connection() as other:
                other.execute("DELETE FROM orders_product WHERE id = %s", [product.pk])
        return execute(sql, params, many, context)

    with connection.execute_wrapper(delete_before_stock_update), pytest.raises(ProductNotFound):
        order_place(customer_id=customer.pk, lines=[(product.pk, 1)])
    assert Order.objects.count() == 0


def test_concurrent_customers_with_one_email_in_any_case_make_one():
    start = threading.Barrier(4)
    spellings = ["ann@example.com", "Ann@Example.com", " ANN@example.com", "ann@EXAMPLE.com "]

    def create(i):
        start.wait()
        try:
            return customer_create_service(name=f"Ann {i}", email=spellings[i], region="north").pk
        except DuplicateCustomer:
            return None

    created = [pk for pk in in_threads(4, create) if pk]
    assert len(created) == 1
    assert Customer.objects.get().email_normalized == "ann@example.com"


@pytest.mark.parametrize("change", [False, True], ids=["add", "change"])
def test_two_admins_saving_one_email_at_once_get_one_customer_and_a_form_error(monkeypatch, change):
    """Both forms pass their duplicate check before either inserts; the unique constraint refuses
    the second, which must come back as the form's error, not a 500."""
    admins = [user_create(f"admin{i}", is_staff=True, is_superuser=True) for i in range(2)]
    existing = [customer_create(), customer_create()] if change else []
    both_checked = threading.Barrier(2)
    checks = itertools.count()
    real_clean_email = CustomerAdminForm.clean_email

    def clean_email_then_wait(self):
        email = real_clean_email(self)
        if next(checks) < 2:  # each admin's first check: both pass before either saves
            both_checked.wait(timeout=10)
        return email

    monkeypatch.setattr(CustomerAdminForm, "clean_email", clean_email_then_wait)
    spellings = ["dup@example.com", " DUP@Example.com"]

    def save(i):
        client = Client()
        client.force_login(admins[i])
        path = (
            f"/admin/orders/customer/{existing[i].pk}/change/"
            if change
            else "/admin/orders/customer/add/"
        )
        data = {"name": f"Admin {i}'s", "email": spellings[i], "region": "north"}
        return client.post(path, data)

    responses = in_threads(2, save)
    assert sorted(r.status_code for r in responses) == [200, 302]
    refused = next(r for r in responses if r.status_code == 200)
    assert b"exists already" in refused.content
    assert Customer.objects.filter(email_normalized="dup@example.com").count() == 1
    assert Customer.objects.count() == (2 if change else 1)


def test_a_reader_right_after_the_catalog_is_invalidated_sees_the_order(monkeypatch):
    """The catalog is invalidated once the order has committed (on_commit). Were it invalidated
    before the commit, a reader in between would cache the old stock for everyone, for good."""
    customer, product = customer_create(), product_create(stock=5)
    assert product_catalog()[0]["stock"] == 5
    seen_by_reader = []

    def invalidate_then_read():
        catalog_invalidate()
        # Another request reading the catalog at once, on its own connection.
        seen_by_reader.extend(in_threads(1, lambda _: product_catalog()[0]["stock"]))

    monkeypatch.setattr(order_services, "catalog_invalidate", invalidate_then_read)
    order_place(customer_id=customer.pk, lines=[(product.pk, 2)])
    assert seen_by_reader == [3]
    assert product_catalog()[0]["stock"] == 3


def assert_orders_priced_alike():
    """Every order's total is the sum of its lines and what was charged for it."""
    for order in Order.objects.prefetch_related("items", "payments"):
        lines = sum((i.unit_price * i.quantity for i in order.items.all()), Decimal("0.00"))
        charged = sum((p.amount for p in order.payments.all()), Decimal("0.00"))
        assert order.total == lines == charged, (order.pk, order.total, lines, charged)


def test_a_price_change_racing_an_order_is_price_changed_and_nothing_is_ordered():
    """The order reads the product at 20.00, then waits to take its stock while another
    transaction changes the price to 99.00 and commits. Taking the stock now finds another version;
    the order must not be priced at one price and its line at the other (it was: total 20.00,
    payment 20.00, one line of 99.00): PriceChanged, and nothing of the order remains. Without the
    version check in the stock UPDATE, the order would go through at a price the product no longer
    has."""
    product = product_create(stock=10, price="20.00")
    customer = customer_create()

    def place():
        return order_place(customer_id=customer.pk, lines=[(product.pk, 1)])

    change_price = "UPDATE orders_product SET price = 99, version = version + 1 WHERE id = %s"
    [result] = queued_behind_a_lock(change_price, [product.pk], [place], commit=True)
    assert isinstance(result, PriceChanged), result
    assert (result.quoted, result.price) == (Decimal("20.00"), Decimal("99.00"))
    assert "changed from 20.00\u00a0EUR to 99.00\u00a0EUR" in str(result)
    assert (Order.objects.count(), OrderItem.objects.count(), Payment.objects.count()) == (0, 0, 0)
    assert Product.objects.get(pk=product.pk).stock == 10


def test_a_restock_racing_an_order_changes_the_version_not_the_price_so_the_order_goes_through():
    product = product_create(stock=10, price="20.00")
    customer = customer_create()

    def place():
        return order_place(customer_id=customer.pk, lines=[(product.pk, 3)])

    restock = "UPDATE orders_product SET stock = stock + 5, version = version + 1 WHERE id = %s"
    [order] = queued_behind_a_lock(restock, [product.pk], [place], commit=True)
    assert isinstance(order, Order), order
    assert order.total == Decimal("60.00")
    assert Product.objects.get(pk=product.pk).stock == 12
    assert_orders_priced_alike()


def test_prices_changing_under_many_buyers_never_price_an_order_unlike_its_lines():
    products = [product_create(stock=1000, price="10.00") for _ in range(3)]
    customers = [customer_create() for _ in range(6)]
    start = threading.Barrier(7)

    def run(i):
        start.wait()
        rng = random.Random(i)
        if i == 6:  # one thread keeps changing prices
            for n in range(40):
                p = products[n % 3]
                version = Product.objects.filter(pk=p.pk).values_list("version", flat=True)[0]
                try:
                    order_services.product_update(
                        product_id=p.pk,
                        expected_version=version,
                        price=Decimal(10 + rng.randint(0, 90)),
                    )
                except StaleVersion:
                    pass
            return 0
        placed = 0
        for _ in range(15):
            lines = [(p.pk, 1) for p in rng.sample(products, 2)]
            try:
                order_place(customer_id=customers[i].pk, lines=lines)
                placed += 1
            except PriceChanged:
                pass
        return placed

    assert sum(in_threads(7, run)) == Order.objects.count() > 0
    assert_orders_priced_alike()
