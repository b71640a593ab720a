"""Real threads, each with its own PostgreSQL connection; the invariants are asserted afterwards."""

import logging
import random
import threading
import time
from decimal import Decimal

import pytest
from django.db import DatabaseError, connection

from accounts.exceptions import InsufficientFunds, StaleVersion
from accounts.models import Account, LedgerEntry, Transfer
from accounts.services import account_update, transfer_batch, transfer_create
from tests.accounts.invariants import assert_ledger_matches_balances, total_money
from tests.factories import account_create, user_create
from tests.helpers import in_threads, killed_before, raw_connection

pytestmark = pytest.mark.django_db(transaction=True)


def test_opposite_transfers_from_many_threads_never_deadlock_and_conserve_money(caplog):
    owner = user_create()
    accounts = [account_create(owner=owner, balance="100.00") for _ in range(4)]
    ids = [a.pk for a in accounts]
    before = total_money()
    start = threading.Barrier(8)

    def worker(i):
        rng = random.Random(i)
        start.wait()
        done = refused = 0
        for _ in range(25):
            source, target = rng.sample(ids, 2)
            try:
                transfer_create(
                    source_id=source, target_id=target, amount=Decimal(rng.randint(1, 4000)) / 100
                )
                done += 1
            except InsufficientFunds:
                refused += 1
        return done, refused

    with caplog.at_level(logging.INFO, logger="dbops.retry"):
        results = in_threads(8, worker)
    # Rows locked in one order: no deadlock for the retry helper to hide.
    assert [r for r in caplog.records if getattr(r, "sqlstate", None) == "40P01"] == []
    assert sum(done for done, _ in results) == Transfer.objects.count() > 0
    assert total_money() == before
    assert (
        LedgerEntry.objects.filter(transfer__isnull=False).count() == 2 * Transfer.objects.count()
    )
    assert_ledger_matches_balances()


def test_two_concurrent_calls_with_one_key_make_one_transfer():
    owner = user_create()
    source, target = account_create(owner=owner, balance="50"), account_create(owner=owner)
    start = threading.Barrier(6)

    def submit(i):
        start.wait()
        return transfer_create(
            source_id=source.pk, target_id=target.pk, amount="20", idempotency_key="same"
        ).pk

    ids = in_threads(6, submit)
    assert len(set(ids)) == 1
    assert Transfer.objects.count() == 1
    source.refresh_from_db()
    assert source.balance == Decimal("30.00")
    assert_ledger_matches_balances()


def test_killed_connection_mid_transfer_leaves_nothing_and_a_retry_applies_once():
    owner = user_create()
    source, target = account_create(owner=owner, balance="50"), account_create(owner=owner)

    def transfer():
        return transfer_create(
            source_id=source.pk, target_id=target.pk, amount="20", idempotency_key="retry-me"
        )

    # Killed after both balances were updated, before the ledger entries and the commit.
    error = killed_before('INSERT INTO "accounts_ledgerentry"', transfer)
    assert isinstance(error, DatabaseError)
    assert Transfer.objects.count() == 0
    assert sorted(Account.objects.values_list("balance", flat=True)) == [
        Decimal("0.00"),
        Decimal("50.00"),
    ]

    # The client retries with the same key: applied once, and a further retry changes nothing.
    first, again = transfer(), transfer()
    assert first.pk == again.pk
    assert Transfer.objects.count() == 1
    source.refresh_from_db()
    assert source.balance == Decimal("30.00")
    assert_ledger_matches_balances()


def test_concurrent_batches_over_the_same_accounts_never_deadlock(caplog):
    owner = user_create()
    accounts = [account_create(owner=owner, balance="1000.00") for _ in range(4)]
    ids = [a.pk for a in accounts]
    before = total_money()
    start = threading.Barrier(4)

    def batch(i):
        # Each batch walks the accounts in a different order; all lock them up front in id order.
        order = ids if i % 2 else ids[::-1]
        items = [
            {"source_id": a, "target_id": b, "amount": "1.00"}
            for a, b in zip(order, order[1:] + order[:1], strict=True)
        ]
        start.wait()
        results = [transfer_batch(items=items) for _ in range(5)]
        return sum(len(r.succeeded) for r in results), sum(len(r.failed) for r in results)

    with caplog.at_level(logging.INFO, logger="dbops.retry"):
        outcomes = in_threads(4, batch)
    assert [r for r in caplog.records if getattr(r, "sqlstate", None) == "40P01"] == []
    assert outcomes == [(20, 0)] * 4
    assert Transfer.objects.count() == 80
    assert total_money() == before
    assert_ledger_matches_balances()


def test_two_editors_of_one_account_the_second_gets_stale_version():
    account = account_create(owner=user_create())
    start = threading.Barrier(2)

    def edit(i):
        start.wait()
        try:
            return account_update(
                account_id=account.pk, expected_version=1, name=f"editor {i}"
            ).name
        except StaleVersion as exc:
            return exc

    results = in_threads(2, edit)
    winners = [r for r in results if isinstance(r, str)]
    losers = [r for r in results if isinstance(r, StaleVersion)]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].current.name == winners[0]
    account.refresh_from_db()
    assert (account.name, account.version) == (winners[0], 2)


def a_backend_waits_for_a_lock(deadline_s: float = 10) -> None:
    """Return once a backend of this database waits for a row lock (asked of PostgreSQL itself).
    Not by pid: through PgBouncer a client's backend is known only once its transaction runs."""
    deadline = time.monotonic() + deadline_s
    with raw_connection() as observer:
        while True:
            row = observer.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if row[0]:
                return
            assert time.monotonic() < deadline, "the other batch never waited for a lock"
            time.sleep(0.01)


def test_a_batch_with_string_ids_takes_its_locks_up_front_against_a_concurrent_batch(caplog):
    """Batch X names its accounts as digit strings, high ids first; batch Y, as ints, starts while
    X holds its first locks. X must have locked all four up front: were the strings skipped, X
    would hold c, d only, Y would take a, b and wait for c, and X's second item would wait for a:
    a deadlock, which PostgreSQL breaks by aborting one batch (retried, and logged)."""
    owner = user_create()
    a, b, c, d = (account_create(owner=owner, balance="100.00") for _ in range(4))
    before = total_money()
    x_locked = threading.Event()
    y_started = threading.Event()

    def hold_first_lock_until_y_waits(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if "FOR NO KEY UPDATE" in sql and not x_locked.is_set():
            x_locked.set()
            assert y_started.wait(10)
            a_backend_waits_for_a_lock()
        return result

    def batch(i):
        if i == 0:  # X: string ids
            items = [
                {"source_id": str(c.pk), "target_id": str(d.pk), "amount": "1.00"},
                {"source_id": f" {a.pk} ", "target_id": str(b.pk), "amount": "1.00"},
            ]
            with connection.execute_wrapper(hold_first_lock_until_y_waits):
                return transfer_batch(items=items)
        assert x_locked.wait(10)
        y_started.set()
        items = [
            {"source_id": a.pk, "target_id": b.pk, "amount": "2.00"},
            {"source_id": c.pk, "target_id": d.pk, "amount": "2.00"},
        ]
        return transfer_batch(items=items)

    with caplog.at_level(logging.INFO, logger="dbops.retry"):
        results = in_threads(2, batch)
    deadlocks = [r for r in caplog.records if getattr(r, "sqlstate", None) == "40P01"]
    assert deadlocks == [], "the batches deadlocked"
    assert [len(r.succeeded) for r in results] == [2, 2] and not any(r.failed for r in results)
    assert Transfer.objects.count() == 4
    assert total_money() == before
    assert_ledger_matches_balances()


def test_a_transfer_gives_up_on_a_held_lock_within_its_lock_timeout_and_is_retried(caplog):
    """Another transaction holds the source row. The transfer must stop waiting after its
    transaction-local lock_timeout (55P03), and be re-run by the retry helper, which succeeds once
    the holder lets go: it never waits out the statement timeout behind a stuck transaction."""
    owner = user_create()
    source, target = account_create(owner=owner, balance="10"), account_create(owner=owner)
    holder = raw_connection(autocommit=False)
    holder.execute("SELECT 1 FROM accounts_account WHERE id = %s FOR UPDATE", [source.pk])
    timed_out = threading.Event()

    class ReleaseOnLockTimeout(logging.Handler):
        def emit(self, record):
            if getattr(record, "sqlstate", None) == "55P03":
                timed_out.set()

    handler = ReleaseOnLockTimeout()
    retry_log = logging.getLogger("dbops.retry")
    retry_log.addHandler(handler)
    releaser = threading.Thread(target=lambda: (timed_out.wait(10), holder.rollback()))
    releaser.start()
    try:
        with caplog.at_level(logging.INFO, logger="dbops.retry"):
            transfer = transfer_create(source_id=source.pk, target_id=target.pk, amount="4")
    finally:
        releaser.join()
        holder.close()
        retry_log.removeHandler(handler)
    assert timed_out.is_set(), "the transfer waited for the lock instead of timing out"
    assert Transfer.objects.get() == transfer
    source.refresh_from_db()
    assert source.balance == Decimal("6.00")
    assert_ledger_matches_balances()
