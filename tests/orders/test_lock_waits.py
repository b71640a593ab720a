"""Services behind a product or customer row another transaction keeps locked: they give up
after their lock timeout and retries (``ServiceTransactionFailed``, nothing written), pages
answer 409 "busy, try again", and a service whose row is freed during its retries succeeds."""

from decimal import Decimal

import pytest

from core.exceptions import BUSY_MESSAGE
from dbops.errors import LOCK_NOT_AVAILABLE
from dbops.transactions import DEFAULT_ATTEMPTS, ServiceTransactionFailed
from orders.bulk import product_prices_raise
from orders.exceptions import PriceRaiseStopped
from orders.models import Customer, Order, Payment, Product
from orders.services import customer_update, product_restock, product_update
from tests.factories import customer_create, product_create, user_create
from tests.helpers import row_locked
from tests.orders.test_async import async_client, post
from tests.orders.test_views import order_form

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("short_service_lock_timeout"),
]

BUSY = BUSY_MESSAGE.encode()


@pytest.fixture
def staff(client):
    user = user_create("root", is_staff=True, is_superuser=True)
    client.force_login(user)
    return user


def stored(product) -> tuple:
    current = Product.objects.defer("description").get(pk=product.pk)
    return current.name, current.price, current.stock, current.version


def test_product_restock_gives_up_after_the_lock_timeout_and_adds_nothing():
    product = product_create(stock=5)
    with row_locked(Product, product.pk) as lock, pytest.raises(ServiceTransactionFailed) as busy:
        product_restock(product_id=product.pk, quantity=3, expected_version=1)
    assert lock.retries == [LOCK_NOT_AVAILABLE] * (DEFAULT_ATTEMPTS - 1)
    assert (busy.value.function, busy.value.attempts) == ("product_restock", DEFAULT_ATTEMPTS)
    assert stored(product)[2:] == (5, 1)


def test_product_update_gives_up_after_the_lock_timeout_and_changes_nothing():
    product = product_create(price="9.99")
    with row_locked(Product, product.pk), pytest.raises(ServiceTransactionFailed):
        product_update(product_id=product.pk, expected_version=1, price=Decimal("12.00"))
    assert stored(product)[1:] == (Decimal("9.99"), 10, 1)


@pytest.mark.parametrize("service", ["restock", "update"])
def test_a_product_service_succeeds_once_the_lock_is_released_during_its_retries(service):
    product = product_create(stock=5)
    with row_locked(Product, product.pk, release_on_retry=True) as lock:
        if service == "restock":
            product_restock(product_id=product.pk, quantity=3, expected_version=1)
        else:
            product_update(product_id=product.pk, expected_version=1, stock=8)
    assert lock.retries == [LOCK_NOT_AVAILABLE]
    assert stored(product)[2:] == (8, 2)


def test_customer_update_gives_up_behind_a_locked_row():
    customer = customer_create(name="Old")
    with row_locked(Customer, customer.pk), pytest.raises(ServiceTransactionFailed):
        customer_update(customer_id=customer.pk, name="New")
    assert Customer.objects.get(pk=customer.pk).name == "Old"


def test_the_restock_page_answers_409_busy_and_adds_nothing(client, staff):
    product = product_create(stock=5)
    aclient = async_client(client, staff)
    path = f"/orders/products/{product.pk}/restock/"
    with row_locked(Product, product.pk):
        response = post(aclient, path, {"quantity": 3, "version": 1})
    assert response.status_code == 409
    assert BUSY in response.content
    assert stored(product)[2:] == (5, 1)
    # Sent again once the row is free: added.
    assert post(aclient, path, {"quantity": 3, "version": 1}).status_code == 302
    assert stored(product)[2:] == (8, 2)


def test_the_order_page_answers_409_busy_orders_nothing_and_the_same_form_orders_once(
    client, staff
):
    customer_create(user=staff)
    product = product_create(stock=5)
    data = order_form([(product.pk, 2)], key="busy-order")
    with row_locked(Product, product.pk):
        response = client.post("/orders/new/", data)
    assert response.status_code == 409
    assert BUSY in response.content
    assert (Order.objects.count(), Payment.objects.count(), stored(product)[2]) == (0, 0, 5)
    assert client.post("/orders/new/", data).status_code == 302
    assert client.post("/orders/new/", data).status_code == 302
    assert (Order.objects.count(), stored(product)[2]) == (1, 3)


def test_the_admin_product_form_says_busy_keeps_the_input_and_saves_nothing(client, staff):
    product = product_create(price="9.99", stock=10)
    path = f"/admin/orders/product/{product.pk}/change/"
    data = {"name": "Typed name", "description": "", "price": "12.50", "stock": 10, "version": 1}
    with row_locked(Product, product.pk):
        response = client.post(path, data)
    assert response.status_code == 409
    page = response.content.decode()
    assert f"Not saved. {BUSY_MESSAGE}" in page
    assert 'value="Typed name"' in page and 'value="12.50"' in page
    assert stored(product)[1:] == (Decimal("9.99"), 10, 1)
    assert client.post(path, data).status_code == 302
    assert stored(product) == ("Typed name", Decimal("12.50"), 10, 2)


def test_the_admin_customer_form_says_busy_and_saves_nothing(client, staff):
    customer = customer_create(name="Old")
    path = f"/admin/orders/customer/{customer.pk}/change/"
    data = {"name": "Typed", "email": customer.email, "region": customer.region, "user": ""}
    with row_locked(Customer, customer.pk):
        response = client.post(path, data)
    assert response.status_code == 409
    assert f"Not saved. {BUSY_MESSAGE}" in response.content.decode()
    assert Customer.objects.get(pk=customer.pk).name == "Old"


def test_a_price_raise_batch_behind_a_locked_product_stops_and_says_where():
    first = product_create(sku="R-1", price="10.00")
    locked = product_create(sku="R-2", price="10.00")
    with row_locked(Product, locked.pk), pytest.raises(PriceRaiseStopped) as stopped:
        product_prices_raise(percent=Decimal("10"), batch_size=1)
    assert isinstance(stopped.value.__cause__, ServiceTransactionFailed)
    assert (stopped.value.last_id, stopped.value.rows_done) == (first.pk, 1)
    assert stored(first)[1] == Decimal("11.00") and stored(locked)[1] == Decimal("10.00")
