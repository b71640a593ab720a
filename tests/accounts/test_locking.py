"""What a transfer's row locks let other sessions do while it runs."""

import threading
from decimal import Decimal

import pytest
from django.db import connection

from accounts.models import Account, Transfer
from accounts.services import transfer_create
from tests.accounts.invariants import assert_ledger_matches_balances
from tests.factories import account_create, user_create
from tests.helpers import backends_wait_for_locks, in_threads, raw_connection

pytestmark = pytest.mark.django_db(transaction=True)

GATE = 727_272  # an advisory lock key


@pytest.fixture
def ledger_gate():
    """A connection holding advisory lock GATE, and a trigger that makes every ledger insert wait
    for it: a transfer stops there, its accounts locked, whatever SQL it is written in."""
    gate = raw_connection()
    gate.execute("SELECT pg_advisory_lock(%s)", [GATE])
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_ledger_gate() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN PERFORM pg_advisory_xact_lock({GATE}); RETURN NEW; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER test_ledger_gate BEFORE INSERT ON accounts_ledgerentry"
            " FOR EACH ROW EXECUTE FUNCTION test_ledger_gate()"
        )
    try:
        yield gate
    finally:
        gate.close()
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER IF EXISTS test_ledger_gate ON accounts_ledgerentry")
            cursor.execute("DROP FUNCTION IF EXISTS test_ledger_gate()")


def test_rows_a_transfer_holds_still_take_new_references_from_other_sessions(request):
    """FOR NO KEY UPDATE, not FOR UPDATE: while a transfer holds its source account, another
    session inserting a transfer that references that account (its foreign key check takes FOR KEY
    SHARE) goes straight through instead of queueing behind the transfer."""
    owner = user_create()
    source, target, third = (account_create(owner=owner, balance="50") for _ in range(3))
    gate = request.getfixturevalue("ledger_gate")  # after the deposits, which would wait at it
    transfer_pid = []
    connected = threading.Event()

    def run(i):
        if i == 0:
            connection.ensure_connection()
            transfer_pid.append(connection.connection.info.backend_pid)
            connected.set()
            return transfer_create(source_id=source.pk, target_id=target.pk, amount="20")
        try:
            assert connected.wait(10) and backends_wait_for_locks(transfer_pid)
            with raw_connection(autocommit=False) as other:
                other.execute("SET LOCAL lock_timeout = '1s'")
                # Django's foreign keys are checked at commit; check this one now.
                other.execute("SET CONSTRAINTS ALL IMMEDIATE")
                other.execute(
                    "INSERT INTO accounts_transfer (source_id, target_id, amount, memo)"
                    " VALUES (%s, %s, 1, '') RETURNING id",
                    [source.pk, third.pk],
                )
                other.rollback()
            return "inserted"
        except Exception as exc:  # noqa: BLE001 (handed to the test to assert on)
            return exc
        finally:
            gate.execute("SELECT pg_advisory_unlock(%s)", [GATE])

    transfer, other = in_threads(2, run)
    assert other == "inserted", f"the insert waited for the transfer's lock: {other!r}"
    assert Transfer.objects.get() == transfer
    assert Account.objects.get(pk=source.pk).balance == Decimal("30.00")
    assert_ledger_matches_balances()
