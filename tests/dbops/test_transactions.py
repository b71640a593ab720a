"""``service_transaction``: the retry loop outside, a durable transaction per attempt, a
transaction-local lock timeout inside; against the real server, with the toolkit's own test app."""

from __future__ import annotations

import inspect
import logging
import threading

import pytest
from django.db import OperationalError, connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat

from dbops.errors import DEADLOCK, LOCK_NOT_AVAILABLE, sqlstate
from dbops.exceptions import DbopsError
from dbops.retry import RetryInsideTransaction
from dbops.transactions import ServiceTransactionFailed, service_transaction
from tests.dbops_testapp.models import Item
from tests.helpers import in_threads, row_locked

pytestmark = pytest.mark.django_db(transaction=True)


def show(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SHOW {name}")
        return cursor.fetchone()[0]


def append(pk: int, tag: str) -> None:
    Item.objects.filter(pk=pk).update(note=Concat(F("note"), Value(tag)))


def test_a_real_deadlock_is_retried_and_each_transaction_commits_once(caplog):
    """Two threads take two rows in opposite orders, each holding one when it asks for the other:
    PostgreSQL aborts one (40P01). That one runs again, whole, once the other has committed."""
    a, b = Item.objects.create(name="a"), Item.objects.create(name="b")
    each_holds_one = threading.Barrier(2, timeout=10)
    runs = {"x": 0, "y": 0}

    def mover(tag: str, first: int, second: int) -> None:
        # Longer than deadlock_timeout (1 s): the deadlock detector, not the timeout, decides.
        @service_transaction(lock_timeout_ms=10_000, attempts=3, base_delay=0.001)
        def move():
            runs[tag] += 1
            append(first, tag)
            if runs[tag] == 1:
                each_holds_one.wait()
            append(second, tag)

        move()

    with caplog.at_level(logging.INFO, logger="dbops.retry"):
        in_threads(2, lambda i: mover(*[("x", a.pk, b.pk), ("y", b.pk, a.pk)][i]))
    retried = [r.sqlstate for r in caplog.records if getattr(r, "sqlstate", None)]
    assert retried == [DEADLOCK]
    assert sorted(runs.values()) == [1, 2]
    # The aborted attempt left nothing: each row got each tag exactly once.
    assert sorted("".join(sorted(i.note)) for i in Item.objects.all()) == ["xy", "xy"]


def test_a_lock_timeout_is_retried_and_succeeds_once_the_holder_lets_go():
    held = Item.objects.create(name="held")
    runs = []

    @service_transaction(lock_timeout_ms=50, attempts=5, base_delay=0.001)
    def rename():
        runs.append(1)
        Item.objects.filter(pk=held.pk).update(name="renamed")

    with row_locked(Item, held.pk, release_on_retry=True) as lock:
        rename()
    assert lock.retries == [LOCK_NOT_AVAILABLE]
    assert len(runs) == 2
    assert Item.objects.get().name == "renamed"


def test_gives_up_after_its_attempts_with_service_transaction_failed_and_commits_nothing():
    held = Item.objects.create(name="held")
    runs = []

    @service_transaction(lock_timeout_ms=50, attempts=3, base_delay=0.001)
    def add_then_rename():
        runs.append(1)
        Item.objects.create(name="written before the wait")
        Item.objects.filter(pk=held.pk).update(name="renamed")

    with row_locked(Item, held.pk) as lock, pytest.raises(ServiceTransactionFailed) as failed:
        add_then_rename()
    assert len(runs) == 3
    assert lock.retries == [LOCK_NOT_AVAILABLE] * 2
    error = failed.value
    assert isinstance(error, DbopsError)
    assert (error.attempts, error.sqlstate) == (3, LOCK_NOT_AVAILABLE)
    assert isinstance(error.__cause__, OperationalError)
    assert sqlstate(error.__cause__) == LOCK_NOT_AVAILABLE
    assert "add_then_rename gave up after 3 attempts" in str(error)
    assert "lock not available" in str(error)
    # Durable: no attempt committed any of its writes.
    assert list(Item.objects.values_list("name", flat=True)) == ["held"]


def test_the_lock_timeout_is_local_to_the_transaction():
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '7s'")  # the session's own value
    try:

        @service_transaction(lock_timeout_ms=1234)
        def inside():
            return show("lock_timeout")

        assert inside() == "1234ms"
        assert show("lock_timeout") == "7s"
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")


def test_the_lock_timeout_defaults_to_the_setting_read_at_each_call(settings):
    @service_transaction
    def inside():
        return show("lock_timeout")

    assert inside() == "2s"  # the default, 2000 ms, as PostgreSQL shows it
    settings.DBOPS = {**settings.DBOPS, "SERVICE_LOCK_TIMEOUT_MS": 321}
    assert inside() == "321ms"


def test_a_statement_timeout_is_local_too():
    before = show("statement_timeout")

    @service_transaction(lock_timeout_ms=100, statement_timeout_ms=4321)
    def inside():
        return show("lock_timeout"), show("statement_timeout")

    assert inside() == ("100ms", "4321ms")
    assert show("statement_timeout") == before


def test_refuses_to_run_inside_an_outer_atomic_block():
    runs = []

    @service_transaction
    def work():
        runs.append(1)

    with transaction.atomic(), pytest.raises(RetryInsideTransaction) as refused:
        work()
    assert isinstance(refused.value, DbopsError)
    assert "cannot run inside an outer transaction.atomic()" in str(refused.value)
    assert runs == []


def test_each_attempt_is_a_transaction_of_its_own():
    @service_transaction
    def inside():
        return connection.in_atomic_block, connection.get_autocommit()

    assert inside() == (True, False)
    assert connection.get_autocommit()


def test_another_error_is_not_retried_and_rolls_the_attempt_back():
    runs = []

    class Refused(Exception):
        pass

    @service_transaction(attempts=5)
    def write_then_refuse():
        runs.append(1)
        Item.objects.create(name="rolled back")
        raise Refused("no")

    with pytest.raises(Refused):
        write_then_refuse()
    assert runs == [1]
    assert not Item.objects.exists()


@pytest.mark.django_db(transaction=False)
def test_runs_inside_a_test_case_transaction():
    """Like Django's durable=True, the transaction a TestCase wraps each test in does not count."""

    @service_transaction
    def create():
        return Item.objects.create(name="in a test case")

    assert create().pk is not None


def test_works_bare_and_with_options_and_keeps_the_function_s_metadata():
    def original(item_id: int, *, suffix: str = "!") -> str:
        """Rename an item."""
        item = Item.objects.get(pk=item_id)
        Item.objects.filter(pk=item_id).update(name=item.name + suffix)
        return item.name + suffix

    bare = service_transaction(original)
    configured = service_transaction(using="default", lock_timeout_ms=500, attempts=2)(original)
    item = Item.objects.create(name="x")
    assert bare(item.pk) == "x!"
    assert configured(item.pk, suffix="?") == "x!?"
    for wrapped in (bare, configured):
        assert wrapped.__name__ == "original"
        assert wrapped.__qualname__ == original.__qualname__
        assert wrapped.__doc__ == "Rename an item."
        assert wrapped.__module__ == __name__
        assert wrapped.__wrapped__ is original
        assert inspect.signature(wrapped) == inspect.signature(original)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"attempts": 0}, ValueError),
        ({"attempts": True}, ValueError),
        ({"lock_timeout_ms": 0}, ValueError),
        ({"lock_timeout_ms": 1.5}, ValueError),
        ({"statement_timeout_ms": -1}, ValueError),
    ],
)
def test_bad_options_are_refused_when_decorating(options, error):
    with pytest.raises(error, match="must be a whole number"):
        service_transaction(**options)


def test_options_given_by_position_are_refused():
    with pytest.raises(TypeError, match="by keyword"):
        service_transaction("default")


def test_a_bad_setting_is_refused_at_the_call(settings):
    settings.DBOPS = {**settings.DBOPS, "SERVICE_LOCK_TIMEOUT_MS": 0}

    @service_transaction
    def work():
        return 1

    with pytest.raises(ValueError, match="SERVICE_LOCK_TIMEOUT_MS"):
        work()
