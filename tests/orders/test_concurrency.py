import random
import threading

import pytest

from orders.exceptions import OutOfStock
from orders.models import Order, OrderItem, Product
from orders.services import order_place
from tests.factories import customer_create, product_create
from tests.helpers import in_threads

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
    sold = sum(1000 - Product.objects.get(pk=p.pk).stock for p in products)
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
