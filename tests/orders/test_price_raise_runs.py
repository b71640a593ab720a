"""The price raise's run (``orders.models.PriceRaiseRun``): its checkpoint commits with each batch,
so resuming by ``run_id`` raises every product exactly once, even when the client never heard
that a batch committed (a lost acknowledgement, made real by a proxy that forwards the COMMIT to
PostgreSQL and drops its answer), and when two resumers of one run race (real threads). A
finished run, or a resume that does not match its run, is refused before anything is written."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest
from django.db import OperationalError, connection, transaction
from django.test import Client

from dbops.retry import RetryInsideTransaction
from orders.bulk import product_prices_raise
from orders.exceptions import InvalidChange, PriceRaiseRunFinished, PriceRaiseStopped
from orders.models import PriceRaiseRun, Product
from tests.factories import product_create, user_create
from tests.helpers import DatabaseProxy, queued_behind_a_lock, row_locked

pytestmark = pytest.mark.django_db(transaction=True)


def prices() -> dict[int, tuple[Decimal, int]]:
    return {p.pk: (p.price, p.version) for p in Product.objects.only("price", "version")}


def stored() -> dict[int, tuple]:
    """Each product's price, version and row version (``xmin``: a new one for any write)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, price, version, xmin::text FROM orders_product")
        return {pk: tuple(rest) for pk, *rest in cursor.fetchall()}


def products(count: int, price: str = "100.00") -> list[int]:
    return [product_create(sku=f"RR-{i:02}", price=price).pk for i in range(count)]


# --- a lost acknowledgement ---------------------------------------------------------------------


class AckLosingProxy(DatabaseProxy):
    """The test database behind a TCP port that, once ``armed``, forwards the client's next COMMIT
    to PostgreSQL and then, instead of passing the server's answer back, closes the connection:
    the transaction is committed on the server and the client sees its connection die while it
    waits for the answer, which is what a network failure at that moment looks like."""

    # psycopg sends COMMIT as a simple Query message: 'Q', its length (4 + 7), the text, NUL.
    COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"

    def __init__(self, settings_dict: dict):
        self.armed = threading.Event()
        self.commit_forwarded = threading.Event()
        self.answer_dropped = threading.Event()
        super().__init__(settings_dict)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        from_client = source.getsockname() == ("127.0.0.1", self.port)
        try:
            while data := source.recv(65536):
                if from_client and self.armed.is_set() and self.COMMIT in data:
                    self.armed.clear()
                    self.commit_forwarded.set()  # before it leaves: the answer comes after
                elif not from_client and self.commit_forwarded.is_set():
                    self.answer_dropped.set()
                    return  # the answer to the COMMIT never reaches the client
                target.sendall(data)
        except OSError:
            pass
        finally:
            self._close(source, target)


@contextmanager
def default_connection_through(proxy: DatabaseProxy) -> Iterator[None]:
    """The test's default connection opened through ``proxy`` for the block."""
    saved = {key: connection.settings_dict[key] for key in ("HOST", "PORT")}
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(proxy.port))
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.update(saved)
        proxy.cut()


def raise_losing_the_answer_to_batch_2(ids: list[int]) -> PriceRaiseStopped:
    """A raise of ``ids`` in batches of three whose second batch commits on the server while
    the client's connection dies waiting for the answer; the stop it raised."""
    proxy = AckLosingProxy(connection.settings_dict)

    def progress(result):
        if result.batches == 1:  # batch 1's answer arrived: the next COMMIT is batch 2's
            proxy.armed.set()

    with default_connection_through(proxy), pytest.raises(PriceRaiseStopped) as stopped:
        product_prices_raise(percent=Decimal("10"), batch_size=3, progress=progress)
    assert proxy.commit_forwarded.is_set() and proxy.answer_dropped.is_set()
    assert isinstance(stopped.value.__cause__, OperationalError), stopped.value.__cause__
    return stopped.value


def test_a_batch_committed_while_its_answer_was_lost_is_in_the_run_and_resuming_it_raises_once():
    ids = products(9)
    stop = raise_losing_the_answer_to_batch_2(ids)

    # The client heard of batch 1 only, and the stop says so, naming the run.
    assert (stop.last_id, stop.rows_done) == (ids[2], 3)
    message = str(stop)
    assert f"3 products (ids up to {ids[2]}) are raised and committed" in message
    assert f"price raise run {stop.run_id} records exactly what is" in message
    assert f"Resume with run_id={stop.run_id}; do not start it over." in message
    # The server committed batch 2 too, and the run's checkpoint with it, in the same transaction.
    assert [prices()[pk] for pk in ids] == [(Decimal("110.00"), 2)] * 6 + [
        (Decimal("100.00"), 1)
    ] * 3
    run = PriceRaiseRun.objects.get(pk=stop.run_id)
    assert (run.last_id, run.products, run.batches, run.finished_at) == (ids[5], 6, 2, None)

    result = product_prices_raise(run_id=stop.run_id)
    assert (result.run_id, result.products, result.batches, result.last_id) == (
        stop.run_id,
        3,
        1,
        ids[-1],
    )
    assert prices() == dict.fromkeys(ids, (Decimal("110.00"), 2)), "a product raised twice"
    run.refresh_from_db()
    assert (run.last_id, run.products, run.batches) == (ids[-1], 9, 3)
    assert run.finished_at is not None


def test_resuming_the_same_stop_from_the_id_the_client_saw_raises_the_lost_batch_twice():
    """What the run fixes: the older ``after_id=`` resumes from the last batch the client heard
    of, one batch short of what committed."""
    ids = products(9)
    stop = raise_losing_the_answer_to_batch_2(ids)
    assert stop.last_id == ids[2]

    product_prices_raise(percent=Decimal("10"), batch_size=3, after_id=stop.last_id)
    assert [prices()[pk] for pk in ids] == (
        [(Decimal("110.00"), 2)] * 3 + [(Decimal("121.00"), 3)] * 3 + [(Decimal("110.00"), 2)] * 3
    ), "batch 2 was not raised twice: the after_id resume point was not one batch behind"


# --- two resumers -------------------------------------------------------------------------------


def test_two_resumers_of_one_run_take_its_batches_in_turn_and_raise_each_product_once(
    settings, short_service_lock_timeout
):
    ids = products(12)
    # Batches of two: the second meets ids[2] locked, so the run stops after its first batch.
    with row_locked(Product, ids[2]), pytest.raises(PriceRaiseStopped) as stopped:
        product_prices_raise(percent=Decimal("10"), batch_size=2)
    run_id = stopped.value.run_id
    assert PriceRaiseRun.objects.get(pk=run_id).last_id == ids[1]
    # They queue for the run's row: long enough that neither gives up while the other works.
    settings.DBOPS = {**settings.DBOPS, "SERVICE_LOCK_TIMEOUT_MS": 10_000}

    # Both start while another connection holds the run's row, and go on once both wait for it.
    table = PriceRaiseRun._meta.db_table
    results = queued_behind_a_lock(
        f'SELECT 1 FROM "{table}" WHERE id = %s FOR UPDATE',  # noqa: S608 (the model's table)
        [run_id],
        [lambda: product_prices_raise(run_id=run_id)] * 2,
    )
    for result in results:
        assert not isinstance(result, BaseException), result
        assert result.run_id == run_id
    # Ten products left, five batches: shared between the two, none applied by both.
    assert sum(r.products for r in results) == 10 and sum(r.batches for r in results) == 5
    assert prices() == dict.fromkeys(ids, (Decimal("110.00"), 2)), "a batch applied twice"
    run = PriceRaiseRun.objects.get(pk=run_id)
    assert (run.last_id, run.products, run.batches) == (ids[-1], 12, 6)
    assert run.finished_at is not None


# --- refused resumes ----------------------------------------------------------------------------


def test_a_finished_run_refuses_to_resume_and_writes_nothing():
    ids = products(4)
    done = product_prices_raise(percent=Decimal("10"), batch_size=3)
    before, run = stored(), PriceRaiseRun.objects.get(pk=done.run_id)
    assert run.finished_at is not None

    with pytest.raises(PriceRaiseRunFinished) as refused:
        product_prices_raise(run_id=done.run_id)
    assert refused.value.run == run
    message = str(refused.value)
    assert message.startswith(f"Price raise run {done.run_id} finished at ")
    assert "4 products raised in 2 batches. Nothing is left to resume" in message
    assert stored() == before and prices() == dict.fromkeys(ids, (Decimal("110.00"), 2))
    assert PriceRaiseRun.objects.get(pk=done.run_id).updated_at == run.updated_at


@pytest.fixture
def stopped_run(short_service_lock_timeout) -> PriceRaiseStopped:
    """A 3% raise of the "RR-" products stopped after its first batch (of two)."""
    ids = products(4)
    with row_locked(Product, ids[2]), pytest.raises(PriceRaiseStopped) as stopped:
        product_prices_raise(percent=Decimal("3"), sku_prefix="RR-", batch_size=2)
    return stopped.value


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"percent": Decimal("4")}, "percent: run {run} raises by 3%, not 4%: resume it without"),
        ({"sku_prefix": "RR-0"}, "sku_prefix: run {run} raises the SKUs starting with 'RR-', not"),
        ({"after_id": 1}, "after_id: give run_id or after_id, not both"),
        ({"batch_size": 0}, "batch_size: must be a whole number of at least 1"),
    ],
    ids=["other percent", "other prefix", "after_id too", "bad batch size"],
)
def test_a_resume_that_does_not_match_its_run_is_refused_and_writes_nothing(
    stopped_run, arguments, message
):
    before = stored()
    with pytest.raises(InvalidChange, match=message.format(run=stopped_run.run_id)):
        product_prices_raise(run_id=stopped_run.run_id, **arguments)
    assert stored() == before
    assert PriceRaiseRun.objects.get(pk=stopped_run.run_id).last_id == stopped_run.last_id
    # The same percent and prefix, however written, are the run's: it resumes.
    product_prices_raise(run_id=stopped_run.run_id, percent=Decimal("3.00"), sku_prefix="RR-")
    assert {v for _, v in prices().values()} == {2}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"run_id": 999_999}, "run_id: there is no price raise run 999999"),
        ({"run_id": "1"}, "run_id: must be the id of a price raise run"),
        ({}, "percent: is required to start a raise"),
        ({"percent": Decimal("3.00001")}, "percent: may have at most 4 decimal places"),
        ({"percent": Decimal("3"), "sku_prefix": "X" * 41}, "sku_prefix: may be at most 40"),
        ({"percent": Decimal("3"), "after_id": -1}, "after_id: must be a product id"),
    ],
)
def test_bad_arguments_are_refused_before_any_run_is_recorded(arguments, message):
    products(2)
    before = stored()
    with pytest.raises(InvalidChange, match=message):
        product_prices_raise(**arguments)
    assert stored() == before and not PriceRaiseRun.objects.exists()


def test_a_raise_inside_a_callers_transaction_is_refused_before_its_run_is_recorded():
    products(2)
    with transaction.atomic(), pytest.raises(RetryInsideTransaction):
        product_prices_raise(percent=Decimal("3"))
    assert not PriceRaiseRun.objects.exists()
    assert {v for _, v in prices().values()} == {1}


def test_the_admin_shows_runs_and_changes_none():
    ids = products(3)
    run_id = product_prices_raise(percent=Decimal("10"), batch_size=2).run_id
    staff = Client()
    staff.force_login(user_create("runs", is_staff=True, is_superuser=True))
    listing = staff.get("/admin/orders/priceraiserun/")
    assert listing.status_code == 200 and str(ids[-1]) in listing.text
    page = staff.get(f"/admin/orders/priceraiserun/{run_id}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.text
    changed = staff.post(f"/admin/orders/priceraiserun/{run_id}/change/", {"last_id": "0"})
    assert changed.status_code == 403
    assert staff.get("/admin/orders/priceraiserun/add/").status_code == 403
    assert (
        staff.post(f"/admin/orders/priceraiserun/{run_id}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert PriceRaiseRun.objects.get(pk=run_id).last_id == ids[-1]
