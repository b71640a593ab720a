"""The bulk writes behind a product row another transaction keeps locked (``row_locked``: a second
connection holding ``SELECT ... FOR UPDATE`` in an open transaction). The batch that meets the
lock gives up after its lock timeout and retries (``orders.bulk.batch_run``), and the bulk write
stops there: the import with ``ImportStopped`` (the command: exit status 1, the line and how to
resume, no traceback), the price raise with ``PriceRaiseStopped`` (its run, to resume). The batches
before it stay committed, that batch wrote nothing, and finishing afterwards writes every row
exactly once. A lock released during the retries costs one retry, not the bulk write."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client

from dbops.errors import LOCK_NOT_AVAILABLE
from dbops.transactions import ServiceTransactionFailed
from orders.bulk import BATCH_ATTEMPTS, product_prices_raise
from orders.exceptions import ImportStopped, PriceRaiseStopped
from orders.imports import products_import
from orders.models import PriceRaiseRun, Product
from orders.selectors import CATALOG_GENERATION_KEY
from tests.factories import product_create, user_create
from tests.helpers import (
    ROOT,
    backends_wait_for_locks,
    raw_connection,
    row_locked,
    server_pid,
    subprocess_env,
)
from tests.orders.test_imports import csv_file, run

pytestmark = pytest.mark.django_db(transaction=True)

LOCK_TIMEOUT_MS = 50  # five attempts of a batch give up in well under a second
# The import: batches of two rows, lines 2-3, 4-5 and 6-7. BL-2 (batch 1) and BL-4 (batch 2)
# exist with other prices; the rest are new. BL-3 sorts before BL-4, so the statement of batch 2
# has inserted it by the time it waits for BL-4's row.
ROWS = [f"BL-{i},Product {i},{i}.50,{i}" for i in range(1, 7)]
BATCH = "2"


@pytest.fixture(autouse=True)
def short_lock_timeout(settings):
    settings.DBOPS = {**settings.DBOPS, "SERVICE_LOCK_TIMEOUT_MS": LOCK_TIMEOUT_MS}


@pytest.fixture
def existing():
    """BL-2 and BL-4 as stored before the import: BL-4 is the row batch 2 meets locked."""
    return {
        "BL-2": product_create(sku="BL-2", price="1.00", stock=2),
        "BL-4": product_create(sku="BL-4", price="1.00", stock=4),
    }


def stored() -> dict[str, tuple]:
    """Every product's price and version, and its row version's ``xmin``: a new one for any write."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT sku, price, version, xmin::text FROM orders_product")
        return {sku: rest for sku, *rest in cursor.fetchall()}


def generation() -> int:
    return cache.get(CATALOG_GENERATION_KEY, 1)


def assert_stopped_at_batch_2(before: dict[str, tuple]) -> dict[str, tuple]:
    """Batch 1 committed whole; batch 2 and 3 wrote nothing (not BL-3, inserted before the wait).
    Returns what is stored."""
    after = stored()
    assert sorted(after) == ["BL-1", "BL-2", "BL-4"], "batch 2 or 3 was written in part"
    assert after["BL-1"][:2] == [Decimal("1.50"), 1]
    assert after["BL-2"][:2] == [Decimal("2.50"), 2]
    assert after["BL-4"] == before["BL-4"], "the locked row was written"
    return after


def assert_finished(stopped: dict[str, tuple]) -> None:
    """Every row of the file stored, each written once: batch 1's rows untouched since the stop."""
    after = stored()
    assert {sku: row[:2] for sku, row in after.items()} == {
        "BL-1": [Decimal("1.50"), 1],
        "BL-2": [Decimal("2.50"), 2],  # updated once
        "BL-3": [Decimal("3.50"), 1],
        "BL-4": [Decimal("4.50"), 2],  # updated once, after the lock was gone
        "BL-5": [Decimal("5.50"), 1],
        "BL-6": [Decimal("6.50"), 1],
    }
    assert after["BL-1"] == stopped["BL-1"] and after["BL-2"] == stopped["BL-2"]


# --- the import ---------------------------------------------------------------------------------


@pytest.mark.parametrize("copy", [False, True], ids=["arrays", "copy"])
def test_an_import_batch_behind_a_locked_row_stops_the_import_and_a_rerun_finishes_it(
    tmp_path, existing, copy
):
    path = csv_file(tmp_path, ROWS)
    before, invalidated = stored(), generation()
    with row_locked(Product, existing["BL-4"].pk) as lock:
        with open(path, "rb") as file, pytest.raises(ImportStopped) as stopped:
            products_import(file=file, batch_size=2, copy=copy)
        assert lock.retries == [LOCK_NOT_AVAILABLE] * (BATCH_ATTEMPTS - 1)
        stop = stopped.value
        assert (stop.line, stop.batches, stop.rows_written) == (4, 1, 2)
        cause = stop.__cause__
        assert isinstance(cause, ServiceTransactionFailed)
        assert (cause.sqlstate, cause.attempts) == (LOCK_NOT_AVAILABLE, BATCH_ATTEMPTS)
        message = str(stop)
        assert message.startswith("The import stopped at the batch starting on line 4: ")
        assert (
            f"line 4: the batch was refused on each of its {BATCH_ATTEMPTS} attempts, the last "
            "time with "
            "'canceling statement due to lock timeout' (55P03): other transactions held rows it "
            "had to write. 1 batch (2 rows) before it is committed" in message
        )
        assert "Run the same file again to finish" in message
        assert ".." not in message and "may be made again" not in message
        done = assert_stopped_at_batch_2(before)
        assert generation() == invalidated + 1, "the committed batch left the catalog cached"

    with open(path, "rb") as file:
        report = products_import(file=file, batch_size=2, copy=copy)
    assert (report.inserted, report.updated, report.unchanged) == (3, 1, 2)
    assert_finished(done)


def test_the_command_behind_a_locked_row_exits_1_naming_the_line_and_how_to_resume(
    tmp_path, existing
):
    path = csv_file(tmp_path, ROWS)
    before = stored()
    with row_locked(Product, existing["BL-4"].pk) as lock:
        code, _, said = run(path, "--batch-size", BATCH)
        assert lock.retries == [LOCK_NOT_AVAILABLE] * (BATCH_ATTEMPTS - 1)
    assert code == 1
    assert said.startswith(f"{path}: The import stopped at the batch starting on line 4: ")
    assert "1 batch (2 rows) before it is committed" in said
    assert "Run the same file again to finish" in said
    assert "Traceback" not in said
    done = assert_stopped_at_batch_2(before)

    code, out, _ = run(path, "--batch-size", BATCH)
    assert code == 0 and "3 inserted, 1 updated, 2 unchanged, 0 rejected, in 3 batches" in out
    assert_finished(done)
    finished = stored()
    # And once more: nothing left to write, no row written again.
    code, out, _ = run(path, "--batch-size", BATCH)
    assert code == 0 and "0 inserted, 0 updated, 6 unchanged" in out
    assert stored() == finished


def test_the_command_run_as_a_process_behind_a_locked_row_exits_1_without_a_traceback(
    tmp_path, existing
):
    path = csv_file(tmp_path, ROWS)
    before = stored()
    with row_locked(Product, existing["BL-4"].pk):
        result = subprocess.run(
            [sys.executable, "manage.py", "import_products", str(path), "--batch-size", BATCH],
            cwd=ROOT,
            env=subprocess_env(DB_SERVICE_LOCK_TIMEOUT_MS=str(LOCK_TIMEOUT_MS)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("CommandError: ") and "batch starting on line 4" in last
    assert "Run the same file again to finish" in last
    assert_stopped_at_batch_2(before)


def test_the_admin_import_behind_a_locked_row_answers_busy_and_says_where_it_stopped(
    tmp_path, existing
):
    staff = Client(raise_request_exception=False)
    staff.force_login(user_create("importer", is_staff=True, is_superuser=True))
    content = ("sku,name,price,stock\n" + "\n".join(ROWS) + "\n").encode()
    before = stored()

    def upload():
        data = {"file": SimpleUploadedFile("products.csv", content, content_type="text/csv")}
        return staff.post("/admin/orders/product/import/", data)

    # The admin imports in batches of 1,000: one batch, stopped whole.
    with row_locked(Product, existing["BL-4"].pk):
        response = upload()
    # Busy, as every page that gives up on a lock answers (409), with what the stop says: what is
    # committed and how to finish, not "nothing was changed".
    assert response.status_code == 409
    assert "The import stopped at the batch starting on line 2" in response.text
    assert "Run the same file again to finish" in response.text
    assert stored() == before, "the one batch was written in part"

    response = upload()
    assert response.status_code == 200
    assert "4 inserted, 2 updated, 0 unchanged, 0 rejected" in response.text


def test_an_import_batch_behind_a_sku_another_transaction_is_inserting_stops_the_same_way(
    tmp_path, existing
):
    """Not a row lock but the inserting transaction's own lock: the batch waits for it to end (to
    know whether the SKU exists), and that wait is under the lock timeout too."""
    path = csv_file(tmp_path, ROWS)
    before = stored()
    with raw_connection(autocommit=False) as other:
        other.execute(
            "INSERT INTO orders_product (sku, name, price, stock, version)"
            " VALUES ('BL-3', 'Other', 7.00, 1, 1)"
        )
        with open(path, "rb") as file, pytest.raises(ImportStopped) as stopped:
            products_import(file=file, batch_size=2)
        other.commit()
    assert (stopped.value.line, stopped.value.batches) == (4, 1)
    assert isinstance(stopped.value.__cause__, ServiceTransactionFailed)
    done = stored()
    assert done.pop("BL-3")[:2] == [Decimal("7.00"), 1]  # the other transaction's, not the file's
    assert sorted(done) == ["BL-1", "BL-2", "BL-4"] and done["BL-4"] == before["BL-4"]

    with open(path, "rb") as file:
        report = products_import(file=file, batch_size=2)
    assert (report.inserted, report.updated, report.unchanged) == (2, 2, 2)
    after = stored()
    assert after["BL-3"][:2] == [Decimal("3.50"), 2]  # the other's row, updated once
    assert after["BL-4"][:2] == [Decimal("4.50"), 2]
    assert after["BL-1"] == done["BL-1"] and after["BL-2"] == done["BL-2"]


@pytest.mark.parametrize("copy", [False, True], ids=["arrays", "copy"])
def test_an_import_batch_whose_row_is_released_during_its_retries_commits_and_the_import_goes_on(
    tmp_path, existing, copy
):
    path = csv_file(tmp_path, ROWS)
    with row_locked(Product, existing["BL-4"].pk, release_on_retry=True) as lock:
        with open(path, "rb") as file:
            report = products_import(file=file, batch_size=2, copy=copy)
        assert lock.retries == [LOCK_NOT_AVAILABLE] and lock.released.is_set()
    assert (report.inserted, report.updated, report.unchanged, report.batches) == (4, 2, 0, 3)
    assert {sku: row[:2] for sku, row in stored().items()} == {
        f"BL-{i}": [Decimal(f"{i}.50"), 2 if i in (2, 4) else 1] for i in range(1, 7)
    }


# --- the price raise ----------------------------------------------------------------------------


def prices() -> dict[int, tuple[Decimal, int]]:
    return {p.pk: (p.price, p.version) for p in Product.objects.only("price", "version")}


@pytest.mark.parametrize("resume", ["run_id", "after_id"])
def test_a_price_raise_batch_behind_a_locked_row_stops_and_resuming_raises_each_product_once(
    resume,
):
    """Resumed by its run, or by the older ``after_id`` (exact here: the stop's commit answers
    all arrived; tests/orders/test_price_raise_runs.py has the case where only the run is)."""
    ids = [product_create(sku=f"PR-{i}", price="100.00").pk for i in range(1, 10)]
    # Batches of three by id: the second (ids[3:6]) meets ids[4] locked.
    invalidated = generation()
    with row_locked(Product, ids[4]) as lock, pytest.raises(PriceRaiseStopped) as stopped:
        product_prices_raise(percent=Decimal("10"), batch_size=3)
    assert lock.retries == [LOCK_NOT_AVAILABLE] * (BATCH_ATTEMPTS - 1)
    stop = stopped.value
    assert (stop.last_id, stop.rows_done) == (ids[2], 3)
    assert PriceRaiseRun.objects.get(pk=stop.run_id).last_id == ids[2]
    cause = stop.__cause__
    assert isinstance(cause, ServiceTransactionFailed)
    assert (cause.sqlstate, cause.attempts) == (LOCK_NOT_AVAILABLE, BATCH_ATTEMPTS)
    message = str(stop)
    assert message.startswith(
        f"The price raise stopped: the batch was refused on each of its {BATCH_ATTEMPTS} attempts, "
        "the last time with 'canceling statement due to lock timeout' (55P03): other transactions held rows it "
        "had to write. "
    )
    # Not ServiceTransactionFailed's "it may be made again": made again whole, a raise doubles.
    assert "may be made again" not in message
    assert f"3 products (ids up to {ids[2]}) are raised and committed; price raise run " in message
    assert f"Resume with run_id={stop.run_id}; do not start it over." in message
    assert ".." not in message
    # The first batch raised once, the second (ids[3] too, before the wait) and third not at all.
    assert prices() == {
        pk: ((Decimal("110.00"), 2) if n < 3 else (Decimal("100.00"), 1))
        for n, pk in enumerate(ids)
    }
    assert generation() == invalidated + 1

    if resume == "run_id":
        result = product_prices_raise(run_id=stop.run_id)
        assert result.run_id == stop.run_id
    else:
        result = product_prices_raise(percent=Decimal("10"), batch_size=3, after_id=stop.last_id)
        assert result.run_id != stop.run_id  # a new run, from that id
    assert (result.products, result.batches, result.last_id) == (6, 2, ids[-1])
    assert prices() == dict.fromkeys(ids, (Decimal("110.00"), 2)), "a product raised twice"
    run = PriceRaiseRun.objects.get(pk=result.run_id)
    assert run.finished_at is not None and run.last_id == ids[-1]


def test_a_price_raise_stopped_in_its_first_batch_raised_nothing_and_its_run_resumes_from_the_start():
    ids = [product_create(sku=f"PR-{i}", price="100.00").pk for i in range(1, 4)]
    with row_locked(Product, ids[1]), pytest.raises(PriceRaiseStopped) as stopped:
        product_prices_raise(percent=Decimal("10"), batch_size=3)
    stop = stopped.value
    assert (stop.last_id, stop.rows_done) == (None, 0)
    assert "0 products (ids up to -) are raised" in str(stop)
    assert f"Resume with run_id={stop.run_id};" in str(stop)
    assert prices() == dict.fromkeys(ids, (Decimal("100.00"), 1))
    assert PriceRaiseRun.objects.get(pk=stop.run_id).last_id is None
    product_prices_raise(run_id=stop.run_id)
    assert prices() == dict.fromkeys(ids, (Decimal("110.00"), 2))


def test_a_price_raise_resumed_and_stopped_again_names_the_id_it_reached_then_finishes_once():
    ids = [product_create(sku=f"PR-{i}", price="100.00").pk for i in range(1, 10)]
    with row_locked(Product, ids[4]), pytest.raises(PriceRaiseStopped) as first:
        product_prices_raise(percent=Decimal("10"), batch_size=3)
    # Resumed while another row, in the last batch, is locked: it stops again, further on.
    run_id = first.value.run_id
    with row_locked(Product, ids[7]), pytest.raises(PriceRaiseStopped) as second:
        product_prices_raise(run_id=run_id)
    assert second.value.run_id == run_id
    assert (second.value.last_id, second.value.rows_done) == (ids[5], 3)
    assert [prices()[pk] for pk in ids] == [(Decimal("110.00"), 2)] * 6 + [
        (Decimal("100.00"), 1)
    ] * 3
    # Resumed behind a lock in its very first batch: nothing raised, the same id to resume from.
    with row_locked(Product, ids[6]), pytest.raises(PriceRaiseStopped) as third:
        product_prices_raise(run_id=run_id)
    assert (third.value.last_id, third.value.rows_done) == (ids[5], 0)
    assert f"0 products (ids up to {ids[5]})" in str(third.value)
    assert f"Resume with run_id={run_id};" in str(third.value)

    product_prices_raise(run_id=run_id)
    assert prices() == dict.fromkeys(ids, (Decimal("110.00"), 2)), "a product raised twice"
    run = PriceRaiseRun.objects.get(pk=run_id)
    assert (run.products, run.batches, run.last_id) == (9, 3, ids[-1])


def test_a_price_raise_batch_whose_row_is_released_during_its_retries_raises_every_product_once():
    ids = [product_create(sku=f"PR-{i}", price="100.00").pk for i in range(1, 10)]
    with row_locked(Product, ids[4], release_on_retry=True) as lock:
        result = product_prices_raise(percent=Decimal("10"), batch_size=3)
        assert lock.retries == [LOCK_NOT_AVAILABLE] and lock.released.is_set()
    assert (result.products, result.batches, result.last_id) == (9, 3, ids[-1])
    assert prices() == dict.fromkeys(ids, (Decimal("110.00"), 2))


# --- released by another thread while a retry waits ---------------------------------------------


def released_while_the_second_attempt_waits(lock, run: Callable[[], object]):
    """``run()`` while another thread lets go of ``lock`` once the batch's first attempt has given
    up (the retry loop's report, an event) and its second attempt is waiting for the row (asked
    of PostgreSQL): the wait ends with the row, not the timeout."""
    retried = threading.Event()

    class Retried(logging.Handler):
        def emit(self, record):
            retried.set()

    pooled = connection.settings_dict.get("PGBOUNCER")
    pid = None if pooled else server_pid()
    waited: list[bool] = []

    def release():
        try:
            if retried.wait(10):
                waited.append(backends_wait_for_locks(None if pooled else [pid], count=1))
        finally:
            lock.release()

    handler = Retried()
    logging.getLogger("dbops.retry").addHandler(handler)
    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        return run()
    finally:
        releaser.join(15)
        logging.getLogger("dbops.retry").removeHandler(handler)
        assert waited == [True], "the second attempt never waited for the row"


@pytest.mark.parametrize("work", ["import", "price raise"])
def test_a_row_released_by_another_thread_while_a_retry_waits_lets_the_batch_commit(
    tmp_path, settings, existing, work
):
    # Long enough for the other thread to see the second attempt waiting and let go.
    settings.DBOPS = {**settings.DBOPS, "SERVICE_LOCK_TIMEOUT_MS": 400}
    path = csv_file(tmp_path, ROWS)
    with row_locked(Product, existing["BL-4"].pk) as lock:
        if work == "import":
            with open(path, "rb") as file:
                report = released_while_the_second_attempt_waits(
                    lock, lambda: products_import(file=file, batch_size=2)
                )
            assert (report.inserted, report.updated, report.batches) == (4, 2, 3)
        else:
            result = released_while_the_second_attempt_waits(
                lock, lambda: product_prices_raise(percent=Decimal("10"), batch_size=1)
            )
            assert result.products == 2
        assert lock.retries == [LOCK_NOT_AVAILABLE]
    if work == "import":
        assert {sku: row[:2] for sku, row in stored().items()} == {
            f"BL-{i}": [Decimal(f"{i}.50"), 2 if i in (2, 4) else 1] for i in range(1, 7)
        }
    else:
        assert {sku: row[:2] for sku, row in stored().items()} == {
            "BL-2": [Decimal("1.10"), 2],
            "BL-4": [Decimal("1.10"), 2],
        }
