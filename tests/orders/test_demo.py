import pytest

from orders import demo
from orders.models import Customer, Order, Product
from orders.services import order_place
from tests.factories import customer_create, product_create

pytestmark = pytest.mark.django_db


class Interrupted(Exception):
    pass


def test_seed_interrupted_between_batches_keeps_whole_batches_and_real_orders_still_work(
    monkeypatch,
):
    monkeypatch.setattr(demo, "BATCH", 7)
    demo.products_seed(5)
    demo.customers_seed(5)

    def stop_after_first_batch(done, total):
        raise Interrupted  # as if the process died right after a committed batch

    with pytest.raises(Interrupted):
        demo.orders_seed(30, progress=stop_after_first_batch)
    assert Order.objects.count() == 7

    # Seeded ids came from the sequence, so a real order right after does not collide.
    order = order_place(customer_id=customer_create().pk, lines=[(product_create().pk, 1)])
    assert order.pk > max(Order.objects.exclude(pk=order.pk).values_list("pk", flat=True))

    assert demo.orders_seed(31) == 23
    assert Order.objects.count() == 31


def test_seed_writes_every_customer_and_product_it_reports_and_fills_the_gaps():
    assert demo.customers_seed(12) == 12
    assert demo.products_seed(9) == 9
    assert Customer.objects.count() == 12 and Product.objects.count() == 9
    assert Customer.objects.filter(email_normalized="").count() == 0
    Customer.objects.filter(email_normalized="customer000003@example.com").delete()
    assert demo.customers_seed(12) == 1
    assert demo.customers_seed(12) == 0
    assert Customer.objects.count() == 12
