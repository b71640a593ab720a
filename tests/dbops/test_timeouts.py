"""Lock and statement timeouts: transaction-local inside a transaction, restored outside one."""

import pytest
from django.db import OperationalError, connection, transaction

from dbops.errors import LOCK_NOT_AVAILABLE, QUERY_CANCELED, sqlstate
from dbops.timeouts import lock_timeout, statement_timeout
from tests.helpers import raw_connection

pytestmark = pytest.mark.django_db(transaction=True)


def setting(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting(%s)", [name])
        return cursor.fetchone()[0]


def test_inside_a_transaction_the_setting_ends_with_it():
    before = setting("lock_timeout")
    with transaction.atomic():
        with lock_timeout(1234):
            assert setting("lock_timeout") == "1234ms"
        # Transaction-local: it lasts to the end of the transaction (one statement, not two).
        assert setting("lock_timeout") == "1234ms"
    # Gone with the transaction: a pooled connection goes back as it came.
    assert setting("lock_timeout") == before


def test_outside_a_transaction_the_previous_value_comes_back():
    before = setting("statement_timeout")
    with statement_timeout(4321):
        assert setting("statement_timeout") == "4321ms"
    assert setting("statement_timeout") == before


def test_as_a_decorator_it_applies_to_the_call():
    @transaction.atomic
    @lock_timeout(777)
    def work():
        return setting("lock_timeout")

    assert work() == "777ms"


def test_a_held_lock_fails_fast_with_lock_not_available():
    holder = raw_connection(autocommit=False)
    holder.execute("LOCK TABLE django_migrations IN ACCESS EXCLUSIVE MODE")
    try:
        with pytest.raises(OperationalError) as failed, transaction.atomic():
            with lock_timeout(50), connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM django_migrations")
    finally:
        holder.close()
    assert sqlstate(failed.value) == LOCK_NOT_AVAILABLE


def test_a_slow_statement_is_cancelled():
    with pytest.raises(OperationalError) as failed, transaction.atomic():
        with statement_timeout(50), connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(2)")
    assert sqlstate(failed.value) == QUERY_CANCELED


@pytest.mark.parametrize("bad", [-1, 1.5, "100", True, None])
def test_a_timeout_that_is_not_whole_milliseconds_is_refused(bad):
    with pytest.raises(ValueError, match="whole number of milliseconds"):
        with lock_timeout(bad):
            pass


@pytest.mark.django_db(transaction=True)
def test_transaction_timeouts_sets_both_for_the_transaction_only():
    from django.db import transaction

    from dbops.timeouts import transaction_timeouts

    with pytest.raises(RuntimeError, match="needs a transaction"):
        transaction_timeouts(lock_ms=100, statement_ms=200)
    with transaction.atomic():
        transaction_timeouts(lock_ms=100, statement_ms=2000)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')"
            )
            assert cursor.fetchone() == ("100ms", "2s")
    with connection.cursor() as cursor:
        cursor.execute("SHOW lock_timeout")
        assert cursor.fetchone()[0] == "0"
