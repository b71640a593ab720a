import threading

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction

from dbops.errors import sqlstate
from dbops.retry import RetryInsideTransaction, retry_transaction
from tests.helpers import raw_connection


def raise_sqlstate(code: str) -> None:
    """Make the real server raise an error with this SQLSTATE."""
    with connection.cursor() as cursor:
        cursor.execute(f"DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = '{code}'; END $$")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("code", ["40P01", "40001", "55P03"])
def test_retries_retryable_errors_then_succeeds(code):
    runs = []

    @retry_transaction(attempts=4, base_delay=0.001)
    @transaction.atomic
    def flaky():
        runs.append(1)
        if len(runs) < 3:
            raise_sqlstate(code)
        return "done"

    assert flaky() == "done"
    assert len(runs) == 3


@pytest.mark.django_db(transaction=True)
def test_gives_up_after_the_last_attempt_with_the_original_error():
    runs = []

    @retry_transaction(attempts=3, base_delay=0.001)
    @transaction.atomic
    def always_deadlocks():
        runs.append(1)
        raise_sqlstate("40P01")

    with pytest.raises(DatabaseError) as excinfo:
        always_deadlocks()
    assert sqlstate(excinfo.value) == "40P01"
    assert len(runs) == 3


@pytest.mark.django_db(transaction=True)
def test_other_errors_are_not_retried():
    runs = []

    @retry_transaction(attempts=5, base_delay=0.001)
    @transaction.atomic
    def unique_violation():
        runs.append(1)
        raise_sqlstate("23505")

    with pytest.raises(IntegrityError):
        unique_violation()
    assert len(runs) == 1


@pytest.mark.django_db(transaction=True)
def test_refuses_to_run_inside_an_outer_transaction():
    @retry_transaction
    def work():
        return 1

    with (
        transaction.atomic(),
        pytest.raises(RetryInsideTransaction, match="outside any atomic block"),
    ):
        work()


@pytest.mark.django_db(transaction=True)
def test_lock_timeout_is_retried_until_the_other_holder_lets_go():
    """A real 55P03: another connection holds a lock; it commits after our first timeout."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS retry_probe (id int PRIMARY KEY)")
    holder = raw_connection(autocommit=False)
    holder.execute("LOCK TABLE retry_probe IN ACCESS EXCLUSIVE MODE")
    first_timeout = threading.Event()
    runs = []

    @retry_transaction(attempts=5, base_delay=0.001)
    @transaction.atomic
    def read_probe():
        runs.append(1)
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '50ms'")
            try:
                cursor.execute("SELECT count(*) FROM retry_probe")
            except DatabaseError:
                first_timeout.set()
                raise
            return cursor.fetchone()[0]

    releaser = threading.Thread(target=lambda: (first_timeout.wait(10), holder.rollback()))
    releaser.start()
    try:
        assert read_probe() == 0
    finally:
        releaser.join()
        holder.close()
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE retry_probe")
    assert len(runs) >= 2
