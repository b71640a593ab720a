"""``product_prices_raise``: one UPDATE per batch, versions advanced, optimistic locking intact
under concurrent edits (real threads), resumable after a failure without raising twice."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection, transaction
from zeal import zeal_context

from core.versioning import versioned_update
from orders.bulk import product_prices_raise
from orders.exceptions import InvalidChange, PriceRaiseStopped, StaleVersion
from orders.models import PriceRaiseRun, Product
from orders.services import product_restock, product_update
from tests.factories import product_create
from tests.helpers import backends_wait_for_locks, in_threads, raw_connection, server_pid

pytestmark = pytest.mark.django_db(transaction=True)


def prices() -> dict[str, tuple[Decimal, int]]:
    return {p.sku: (p.price, p.version) for p in Product.objects.defer("description")}


def test_prices_rise_by_the_percentage_rounded_to_the_cent_and_versions_advance():
    for sku, price in [("A-1", "9.99"), ("A-2", "10.00"), ("A-3", "0.01"), ("A-4", "33.33")]:
        product_create(sku=sku, price=price)
    product_create(sku="B-1", price="10.00")
    result = product_prices_raise(percent=Decimal("3"), sku_prefix="A-")
    assert (result.products, result.batches) == (4, 1)
    assert prices() == {
        "A-1": (Decimal("10.29"), 2),  # 10.2897
        "A-2": (Decimal("10.30"), 2),
        "A-3": (Decimal("0.01"), 2),  # 0.0103
        "A-4": (Decimal("34.33"), 2),  # 34.3299
        "B-1": (Decimal("10.00"), 1),  # another prefix: untouched
    }
    product_prices_raise(percent=Decimal("-50"), sku_prefix="A-2")
    assert prices()["A-2"] == (Decimal("5.15"), 3)


def test_each_batch_is_one_statement_in_its_own_transaction_with_the_runs_checkpoint():
    ids = [product_create(sku=f"C-{i}", price="1.00").pk for i in range(5)]
    statements, seen = [], []

    def count(execute, sql, params, many, context):
        if sql.startswith('UPDATE "orders_product"'):
            statements.append(sql)
        return execute(sql, params, many, context)

    def progress(result):
        # Committed, as another connection sees it: the batch's products and the run's checkpoint.
        with raw_connection() as other:
            raised = other.execute("SELECT count(*) FROM orders_product WHERE version = 2")
            run = other.execute(
                "SELECT products, batches, last_id, finished_at IS NULL FROM orders_priceraiserun"
                " WHERE id = %s",
                [result.run_id],
            )
            seen.append(
                (connection.in_atomic_block, result.products, raised.fetchone()[0], run.fetchone())
            )

    with connection.execute_wrapper(count):
        result = product_prices_raise(percent=Decimal("10"), batch_size=2, progress=progress)
    assert result.batches == 3 and len(statements) == 4  # the last finds no rows
    assert seen == [
        (False, 2, 2, (2, 1, ids[1], True)),
        (False, 4, 4, (4, 2, ids[3], True)),
        (False, 5, 5, (5, 3, ids[4], True)),
    ]
    run = PriceRaiseRun.objects.get(pk=result.run_id)
    assert (run.percent, run.sku_prefix, run.batch_size) == (Decimal("10"), "", 2)
    assert run.finished_at is not None, "the batch that found no rows did not finish the run"


@pytest.mark.parametrize(
    ("percent", "message"),
    [
        (3.0, "must be a Decimal"),
        (Decimal("NaN"), "must be a Decimal"),
        (Decimal("-100"), "must be from -99.99 to 1000"),
        (Decimal("1000.01"), "must be from -99.99 to 1000"),
        (Decimal("1000"), "would take the price 100000000000.00 past the largest price"),
    ],
)
def test_a_bad_percentage_is_refused_before_anything_is_written(percent, message):
    product_create(sku="D-1", price="100000000000.00")
    product_create(sku="D-2", price="1.00")
    before = prices()
    with pytest.raises(InvalidChange, match=message):
        product_prices_raise(percent=percent)
    assert prices() == before


def test_a_raise_that_meets_an_uncommitted_edit_waits_for_it_and_raises_the_edited_price():
    product = product_create(price="10.00")
    edited, release = threading.Event(), threading.Event()
    raiser_pid: list[int] = []

    def editor():
        # An admin's save in progress: the row is changed and locked, not yet committed (the
        # statement product_update runs, held open: the service itself commits at once).
        with transaction.atomic():
            versioned_update(Product, pk=product.pk, expected_version=1, price=Decimal("20.00"))
            edited.set()
            assert release.wait(10)

    def raiser():
        assert edited.wait(10)
        raiser_pid.append(server_pid())
        return product_prices_raise(percent=Decimal("3"))

    def releaser():
        # Let the edit commit only once the raise is really waiting for the edited row.
        assert edited.wait(10)
        while not raiser_pid:
            threading.Event().wait(0.005)
        assert backends_wait_for_locks(raiser_pid)
        release.set()

    in_threads(3, lambda i: [editor, raiser, releaser][i]())
    product.refresh_from_db()
    # Computed from the committed edit, not from the price read before it: nothing lost.
    assert (product.price, product.version) == (Decimal("20.60"), 3)


def test_an_edit_from_a_version_read_before_the_raise_is_refused_not_lost():
    product = product_create(price="10.00")
    read = Product.objects.get(pk=product.pk)  # an editor opens the form: version 1
    product_prices_raise(percent=Decimal("3"))
    with pytest.raises(StaleVersion):
        product_update(product_id=product.pk, expected_version=read.version, price=Decimal("12"))
    product.refresh_from_db()
    assert (product.price, product.version) == (Decimal("10.30"), 2)


def test_restocks_racing_a_raise_lose_neither_their_stock_nor_the_raise():
    products = [product_create(sku=f"R-{i:03d}", price="10.00", stock=0) for i in range(60)]
    ids = [p.pk for p in products]
    restocks = 40

    def restocker(worker: int) -> int:
        done = 0
        for n in range(restocks):
            pk = ids[(worker * 7 + n * 13) % len(ids)]
            while True:  # optimistic: re-read and try again when someone else wrote first
                with zeal_context():  # each attempt is a request of its own, not a loop in one
                    version = Product.objects.values_list("version", flat=True).get(pk=pk)
                    try:
                        product_restock(product_id=pk, quantity=1, expected_version=version)
                    except StaleVersion:
                        continue
                done += 1
                break
        return done

    def run(i: int):
        if i == 0:
            return product_prices_raise(percent=Decimal("3"), batch_size=5).products
        return restocker(i)

    raised, *restocked = in_threads(4, run)
    assert raised == 60 and sum(restocked) == 3 * restocks
    rows = list(Product.objects.filter(pk__in=ids).values_list("price", "stock", "version"))
    assert {price for price, _, _ in rows} == {Decimal("10.30")}, "a raise was lost or doubled"
    assert sum(stock for _, stock, _ in rows) == 3 * restocks, "a restock was lost"
    # Every write advanced the version exactly once: 1, plus one per restock, plus the raise.
    assert all(version == 1 + stock + 1 for _, stock, version in rows)


def test_a_raise_stopped_by_a_killed_connection_resumes_by_its_run_without_raising_twice():
    for i in range(10):
        product_create(sku=f"K-{i}", price="100.00")
    fired = []

    def kill_third_batch(execute, sql, params, many, context):
        if "starts_with" in sql:
            fired.append(sql)
            if len(fired) == 3:
                with raw_connection() as other:
                    other.execute("SELECT pg_terminate_backend(%s)", [server_pid()])
        return execute(sql, params, many, context)

    with connection.execute_wrapper(kill_third_batch), pytest.raises(PriceRaiseStopped) as stop:
        product_prices_raise(percent=Decimal("10"), batch_size=3)
    connection.close()
    run_id = stop.value.run_id
    assert stop.value.rows_done == 6 and f"Resume with run_id={run_id};" in str(stop.value)
    assert (
        sorted(p for p, _ in prices().values()) == [Decimal("100.00")] * 4 + [Decimal("110.00")] * 6
    )
    assert PriceRaiseRun.objects.get(pk=run_id).last_id == stop.value.last_id

    result = product_prices_raise(run_id=run_id)
    assert (result.run_id, result.products, result.batches) == (run_id, 4, 2)
    assert {p for p, _ in prices().values()} == {Decimal("110.00")}, "a product raised twice"
    assert {v for _, v in prices().values()} == {2}
