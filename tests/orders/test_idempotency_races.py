"""Orders with one idempotency key at the same moment: the unique constraint makes the second wait
for the first, and the second answers with the first's order (or a conflict for other lines).

Each test holds the product's row from another connection: the first caller inserts its order and
waits there to take the stock, the second passes its lookup (nothing committed yet), inserts the
same key and waits on the unique index. Both are queued before the row is let go, whatever the
timing of the threads."""

import pytest

from orders.exceptions import IdempotencyConflict
from orders.models import Order, OrderItem, Payment, Product
from orders.services import order_place
from tests.factories import customer_create, product_create
from tests.helpers import queued_behind_a_lock

pytestmark = pytest.mark.django_db(transaction=True)

HOLD_PRODUCT = "SELECT 1 FROM orders_product WHERE id = %s FOR UPDATE"


def test_orders_with_one_key_placed_at_once_are_one_order_and_take_stock_once():
    product = product_create(stock=10)
    customer = customer_create()

    def place():
        return order_place(
            customer_id=customer.pk, lines=[(product.pk, 2)], idempotency_key="queued"
        )

    results = queued_behind_a_lock(HOLD_PRODUCT, [product.pk], [place, place])
    assert all(isinstance(r, Order) for r in results), results
    assert results[0].pk == results[1].pk
    assert Order.objects.count() == 1
    assert Product.objects.get(pk=product.pk).stock == 8
    assert (OrderItem.objects.count(), Payment.objects.count()) == (1, 1)


def test_orders_with_one_key_and_other_lines_at_once_are_one_order_and_a_conflict():
    product = product_create(stock=10)
    customer = customer_create()

    def place(quantity):
        return lambda: order_place(
            customer_id=customer.pk, lines=[(product.pk, quantity)], idempotency_key="queued"
        )

    results = queued_behind_a_lock(HOLD_PRODUCT, [product.pk], [place(2), place(3)])
    [placed] = [r for r in results if isinstance(r, Order)]
    assert [type(r) for r in results if r is not placed] == [IdempotencyConflict]
    assert Order.objects.get() == placed
    [item] = OrderItem.objects.all()
    assert Product.objects.get(pk=product.pk).stock == 10 - item.quantity


def test_one_form_sent_at_once_with_other_lines_tells_the_loser_in_words_not_the_key():
    """Two tabs of one order form rendering, sent at once with other quantities: the second gets a
    sentence, never the key."""
    from django.test import Client

    from tests.factories import user_create
    from tests.orders.test_views import order_form

    product = product_create(stock=10)
    user = user_create()
    customer_create(user=user)
    key = "0123456789abcdef0123456789abcdef"

    def send(quantity):
        def post():
            client = Client()
            client.force_login(user)
            return client.post("/orders/new/", order_form([(product.pk, quantity)], key=key))

        return post

    results = queued_behind_a_lock(HOLD_PRODUCT, [product.pk], [send(2), send(3)])
    assert sorted(r.status_code for r in results) == [302, 400], results
    refused = next(r for r in results if r.status_code == 400)
    page = refused.content.decode()
    assert "This form was already used for another order, so nothing was ordered." in page
    assert key not in page.replace(f'value="{key}"', "")  # only in the hidden field
    assert Order.objects.count() == 1
