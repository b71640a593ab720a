from decimal import Decimal

import pytest

from orders.exceptions import (
    CustomerNotFound,
    DuplicateCustomer,
    IdempotencyConflict,
    InvalidChange,
    InvalidOrderLine,
    OutOfStock,
    PaymentFailed,
    ProductNotFound,
    StaleVersion,
)
from orders.models import Customer, Order, OrderItem, OrderStatus, Payment, Product
from orders.payments import SimulatedGateway
from orders.services import customer_create as customer_create_service
from orders.services import customer_update, order_place, product_restock, product_update
from tests.factories import customer_create, product_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop():
    return (
        customer_create(),
        product_create(stock=10, price="2.50"),
        product_create(stock=5, price="10.00"),
    )


def nothing_written(*products):
    assert (Order.objects.count(), OrderItem.objects.count(), Payment.objects.count()) == (0, 0, 0)
    for product in products:
        stock, version = Product.objects.values_list("stock", "version").get(pk=product.pk)
        assert (stock, version) == (product.stock, product.version)


def test_order_takes_stock_and_is_paid_by_the_first_method(shop):
    customer, a, b = shop
    gateway = SimulatedGateway(decline=set())
    order = order_place(customer_id=customer.pk, lines=[(a.pk, 2), (b.pk, 1)], gateway=gateway)
    assert order.status == OrderStatus.PAID and order.total == Decimal("15.00")
    assert [(p.method, p.amount) for p in order.payments.all()] == [("card", Decimal("15.00"))]
    assert Product.objects.get(pk=a.pk).stock == 8 and Product.objects.get(pk=b.pk).stock == 4
    assert gateway.charges == [("card", Decimal("15.00"), f"order-{order.pk}")]


def test_declined_first_method_falls_back_to_the_second_and_leaves_no_row(shop):
    customer, a, _ = shop
    order = order_place(
        customer_id=customer.pk, lines=[(a.pk, 1)], gateway=SimulatedGateway(decline={"card"})
    )
    assert order.status == OrderStatus.PAID
    assert list(Payment.objects.values_list("method", flat=True)) == ["wallet"]


def test_every_method_declined_leaves_nothing_of_the_order(shop):
    customer, a, b = shop
    with pytest.raises(PaymentFailed) as excinfo:
        order_place(
            customer_id=customer.pk,
            lines=[(a.pk, 1), (b.pk, 2)],
            gateway=SimulatedGateway(decline={"card", "wallet"}),
        )
    assert [method for method, _ in excinfo.value.declined] == ["card", "wallet"]
    nothing_written(a, b)


def test_declines_can_be_set_in_settings(shop, settings):
    customer, a, _ = shop
    settings.PAYMENT_DECLINE_METHODS = ["card", "wallet"]
    with pytest.raises(PaymentFailed):
        order_place(customer_id=customer.pk, lines=[(a.pk, 1)])
    nothing_written(a)


@pytest.mark.parametrize(
    "lines, error",
    [
        ([], InvalidOrderLine),
        ([("P", 0)], InvalidOrderLine),
        ([("P", -1)], InvalidOrderLine),
        ([("P", 1.5)], InvalidOrderLine),
        ([("P", "2")], InvalidOrderLine),
        ([("P", 10_001)], InvalidOrderLine),
        ([("P", 1), ("P", 2)], InvalidOrderLine),
        ([(999_999_999, 1)], ProductNotFound),
        ([("P", 11)], OutOfStock),
        (["junk"], InvalidOrderLine),
    ],
)
def test_bad_lines_raise_and_write_nothing(shop, lines, error):
    customer, a, _ = shop
    # "P" stands for the product made by the fixture.
    lines = [
        (a.pk if line[0] == "P" else line[0], line[1]) if isinstance(line, tuple) else line
        for line in lines
    ]
    with pytest.raises(error):
        order_place(customer_id=customer.pk, lines=lines)
    nothing_written(a)


def test_out_of_stock_in_the_second_line_rolls_back_the_first(shop):
    customer, a, b = shop
    with pytest.raises(OutOfStock) as excinfo:
        order_place(customer_id=customer.pk, lines=[(a.pk, 3), (b.pk, 6)])
    assert (excinfo.value.available, excinfo.value.requested) == (5, 6)
    nothing_written(a, b)


def test_unknown_customer(shop):
    with pytest.raises(CustomerNotFound):
        order_place(customer_id=999_999_999, lines=[(shop[1].pk, 1)])
    nothing_written(shop[1])


def test_replay_with_the_same_key_returns_the_first_order(shop):
    customer, a, _ = shop
    first = order_place(customer_id=customer.pk, lines=[(a.pk, 2)], idempotency_key="o-1")
    again = order_place(customer_id=customer.pk, lines=[(a.pk, 2)], idempotency_key="o-1")
    assert again.pk == first.pk
    assert Product.objects.get(pk=a.pk).stock == 8
    with pytest.raises(IdempotencyConflict):
        order_place(customer_id=customer.pk, lines=[(a.pk, 3)], idempotency_key="o-1")
    assert Order.objects.count() == 1


def test_restock_is_optimistic(shop):
    _, a, _ = shop
    product = product_restock(product_id=a.pk, quantity=5, expected_version=a.version)
    assert (product.stock, product.version) == (15, a.version + 1)
    with pytest.raises(StaleVersion) as excinfo:
        product_restock(product_id=a.pk, quantity=5, expected_version=a.version)
    assert excinfo.value.current.stock == 15
    assert Product.objects.get(pk=a.pk).stock == 15


@pytest.mark.parametrize("quantity", [0, -3, 1.5, "4", True])
def test_restock_rejects_bad_quantity(shop, quantity):
    _, a, _ = shop
    with pytest.raises(InvalidChange):
        product_restock(product_id=a.pk, quantity=quantity, expected_version=a.version)
    assert Product.objects.get(pk=a.pk).version == a.version


def test_product_update_refuses_unknown_fields_and_stale_versions(shop):
    _, a, _ = shop
    with pytest.raises(InvalidChange):
        product_update(product_id=a.pk, expected_version=a.version, sku="NEW")
    product_update(product_id=a.pk, expected_version=a.version, price=Decimal("3.00"))
    with pytest.raises(StaleVersion):
        product_update(product_id=a.pk, expected_version=a.version, name="Lost edit")
    assert Product.objects.get(pk=a.pk).price == Decimal("3.00")


def test_customer_email_is_unique_ignoring_case_and_spaces():
    first = customer_create_service(name="Ann", email="  Ann@Example.COM ", region="north")
    assert first.email_normalized == "ann@example.com"
    with pytest.raises(DuplicateCustomer):
        customer_create_service(name="Ann again", email="ann@example.com", region="south")
    assert Customer.objects.count() == 1


@pytest.mark.parametrize(
    "fields, field",
    [({"email": "not-an-email"}, "email"), ({"region": "mars"}, "region"), ({"name": ""}, "name")],
)
def test_customer_create_rejects_bad_fields_and_writes_nothing(fields, field):
    data = {"name": "Bo", "email": "bo@example.com", "region": "north", **fields}
    with pytest.raises(InvalidChange) as excinfo:
        customer_create_service(**data)
    assert excinfo.value.field == field
    assert Customer.objects.count() == 0


def test_customer_update_keeps_the_normalized_email_in_step():
    customer = customer_create_service(name="Cy", email="cy@example.com", region="east")
    other = customer_create_service(name="Di", email="di@example.com", region="east")
    updated = customer_update(customer_id=customer.pk, email="CY.New@Example.com")
    assert updated.email_normalized == "cy.new@example.com"
    with pytest.raises(DuplicateCustomer):
        customer_update(customer_id=other.pk, email="Cy.new@example.com ")
    assert Customer.objects.get(pk=other.pk).email == "di@example.com"
    with pytest.raises(InvalidChange):
        customer_update(customer_id=other.pk, email_normalized="x")


def test_a_replay_with_the_same_key_writes_nothing_at_all(shop):
    """A replay answers from the first order: no INSERT (that would meet the unique index and
    depend on the error path), no UPDATE of stock, nothing."""
    from tests.helpers import statements_run

    customer, a, _ = shop
    first = order_place(customer_id=customer.pk, lines=[(a.pk, 2)], idempotency_key="k-1")
    with statements_run() as statements:
        again = order_place(customer_id=customer.pk, lines=[(a.pk, 2)], idempotency_key="k-1")
    assert again.pk == first.pk
    writes = [
        s for s in statements if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]
    assert writes == [], writes
    assert statements  # it did look the key up
