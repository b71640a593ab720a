"""The fair baselines: ``transfer_create`` and ``order_place`` written directly in psycopg.

Each does exactly the service's work, statement for statement: the same input checks (the same
functions), a transaction-local ``lock_timeout``, rows locked FOR NO KEY UPDATE in id order, the
idempotency lookup under the lock, the owner (actor) check, the currency, funds and maximum
checks, balances changed relative to themselves, every column the service writes (``created_by``,
the key, the memo), the ledger, a savepoint per payment attempt, and the same retry loop
(``dbops.retry.call_with_retries``). psycopg's defaults apply: server-side binding, a statement
prepared after five runs on a connection.
"""

from __future__ import annotations

from decimal import Decimal

import psycopg

from core.idempotency import idempotency_key_clean
from core.money import MONEY_MAX, money_parse
from dbops.conf import dbops_settings
from dbops.retry import call_with_retries
from dbops.transactions import DEFAULT_ATTEMPTS

ATTEMPTS = DEFAULT_ATTEMPTS  # as service_transaction
LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %s, true)"


class Refused(Exception):
    """The raw version said no (insufficient funds, unknown account...), as the service would."""


ACCOUNTS_LOCK = (
    "SELECT id, owner_id, name, currency, balance, version, created_at FROM accounts_account"
    " WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE"
)
TRANSFER_BY_KEY = (
    "SELECT id, source_id, target_id, amount, idempotency_key, memo, created_by_id, created_at"
    " FROM accounts_transfer WHERE idempotency_key = %s AND source_id = %s LIMIT 1"
)
BALANCES_MOVE = (
    "UPDATE accounts_account SET balance = CASE WHEN id = %s THEN balance - %s"
    " WHEN id = %s THEN balance + %s ELSE NULL END WHERE id IN (%s, %s)"
)
TRANSFER_INSERT = (
    "INSERT INTO accounts_transfer (source_id, target_id, amount, idempotency_key, memo,"
    " created_by_id) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id, created_at"
)
LEDGER_INSERT = (
    "INSERT INTO accounts_ledgerentry (account_id, transfer_id, amount, balance_after)"
    " VALUES (%s, %s, %s, %s), (%s, %s, %s, %s)"
)


def transfer(
    conn: psycopg.Connection,
    *,
    source_id: int,
    target_id: int,
    amount,
    idempotency_key: str | None,
    memo: str = "",
    actor_id: int | None,
) -> int:
    """The transfer's id; ``Refused`` when the service would raise a domain error."""
    amount = money_parse(amount)
    key = idempotency_key_clean(idempotency_key)
    memo = (memo or "").strip()
    if len(memo) > 200 or source_id == target_id:
        raise Refused("bad input")

    def attempt() -> int:
        with conn.transaction():
            conn.execute(LOCK_TIMEOUT, [f"{dbops_settings.SERVICE_LOCK_TIMEOUT_MS}ms"])
            rows = {row[0]: row for row in conn.execute(ACCOUNTS_LOCK, [[source_id, target_id]])}
            if source_id not in rows or target_id not in rows:
                raise Refused("account not found")
            source, target = rows[source_id], rows[target_id]
            if actor_id is not None and source[1] != actor_id:
                raise Refused("not the owner")
            if key is not None:
                earlier = conn.execute(TRANSFER_BY_KEY, [key, source_id]).fetchone()
                if earlier is not None:
                    if earlier[2] != target_id or earlier[3] != amount:
                        raise Refused("idempotency conflict")
                    return earlier[0]
            if source[3] != target[3]:
                raise Refused("currency mismatch")
            if source[4] < amount:
                raise Refused("insufficient funds")
            if target[4] + amount > MONEY_MAX:
                raise Refused("target balance too large")
            conn.execute(
                BALANCES_MOVE, [source_id, amount, target_id, amount, source_id, target_id]
            )
            transfer_id = conn.execute(
                TRANSFER_INSERT, [source_id, target_id, amount, key, memo, actor_id]
            ).fetchone()[0]
            conn.execute(
                LEDGER_INSERT,
                [
                    *(source_id, transfer_id, -amount, source[4] - amount),
                    *(target_id, transfer_id, amount, target[4] + amount),
                ],
            )
            return transfer_id

    return call_with_retries(attempt, attempts=ATTEMPTS, what="raw transfer")


CUSTOMER_EXISTS = "SELECT id FROM orders_customer WHERE id = %s LIMIT 1"
ORDER_BY_KEY = (
    "SELECT id, customer_id, status, total, idempotency_key, created_at FROM orders_order"
    " WHERE customer_id = %s AND idempotency_key = %s LIMIT 1"
)
PRODUCTS = (
    "SELECT id, sku, name, price, stock, version, updated_at FROM orders_product WHERE id = ANY(%s)"
)
ORDER_INSERT = (
    "INSERT INTO orders_order (customer_id, status, total, idempotency_key)"
    " VALUES (%s, 'pending', %s, %s) RETURNING id, created_at"
)
STOCK_TAKE = (
    "UPDATE orders_product SET stock = stock - %s, version = version + 1,"
    " updated_at = statement_timestamp() WHERE id = %s AND stock >= %s AND version = %s"
)
PAYMENT_INSERT = (
    "INSERT INTO orders_payment (order_id, method, amount, status, reference)"
    " VALUES (%s, %s, %s, 'captured', '') RETURNING id, created_at"
)
PAYMENT_REFERENCE = "UPDATE orders_payment SET reference = %s WHERE id = %s"
ORDER_PAID = "UPDATE orders_order SET status = 'paid' WHERE id = %s"
STOCK_RACE_ATTEMPTS = 10


def _stock_take(conn: psycopg.Connection, product: list, quantity: int) -> None:
    """The version-checked conditional UPDATE, re-read and retried on a lost race."""
    for _ in range(STOCK_RACE_ATTEMPTS):
        if product[4] < quantity:
            raise Refused("out of stock")
        taken = conn.execute(STOCK_TAKE, [quantity, product[0], quantity, product[5]]).rowcount
        if taken:
            return
        row = conn.execute(PRODUCTS, [[product[0]]]).fetchone()
        if row is None:
            raise Refused("product not found")
        product[:] = row
    raise Refused("stock contention")


def _items_insert(conn, order_id: int, lines: dict[int, int], products: dict) -> None:
    rows = ", ".join(["(%s, %s, %s, %s)"] * len(lines))
    values = []
    for product_id, quantity in sorted(lines.items()):
        values += [order_id, product_id, quantity, products[product_id][3]]
    conn.execute(
        f"INSERT INTO orders_orderitem (order_id, product_id, quantity, unit_price) VALUES {rows}",  # noqa: S608 (placeholders only)
        values,
    )


def order(
    conn: psycopg.Connection,
    *,
    customer_id: int,
    lines,
    payment_methods=("card", "wallet"),
    idempotency_key: str | None,
    gateway,
) -> int:
    """The order's id; ``Refused`` when the service would raise a domain error."""
    from orders.selectors import catalog_invalidate
    from orders.services import order_lines_clean

    lines = order_lines_clean(lines)
    key = idempotency_key_clean(idempotency_key)

    def attempt() -> int:
        with conn.transaction():
            conn.execute(LOCK_TIMEOUT, [f"{dbops_settings.SERVICE_LOCK_TIMEOUT_MS}ms"])
            if conn.execute(CUSTOMER_EXISTS, [customer_id]).fetchone() is None:
                raise Refused("customer not found")
            if key is not None:
                earlier = conn.execute(ORDER_BY_KEY, [customer_id, key]).fetchone()
                if earlier is not None:
                    return earlier[0]  # (the service compares the lines; never reached here)
            products = {row[0]: list(row) for row in conn.execute(PRODUCTS, [list(lines)])}
            if set(lines) - set(products):
                raise Refused("product not found")
            total = sum((products[p][3] * q for p, q in lines.items()), Decimal("0.00"))
            order_id = conn.execute(ORDER_INSERT, [customer_id, total, key]).fetchone()[0]
            for product_id in sorted(lines):
                _stock_take(conn, products[product_id], lines[product_id])
            _items_insert(conn, order_id, lines, products)
            _payment_take(conn, order_id, total, payment_methods, gateway)
            conn.execute(ORDER_PAID, [order_id])
        catalog_invalidate()  # the service's on_commit hook
        return order_id

    return call_with_retries(attempt, attempts=ATTEMPTS, what="raw order")


def _payment_take(conn, order_id: int, total: Decimal, methods, gateway) -> None:
    from orders.payments import PaymentDeclined

    for method in methods:
        try:
            with conn.transaction():  # a savepoint per attempt, as the service
                payment_id = conn.execute(PAYMENT_INSERT, [order_id, method, total]).fetchone()[0]
                reference = gateway.charge(
                    method=method, amount=total, reference=f"order-{order_id}"
                )
                conn.execute(PAYMENT_REFERENCE, [reference, payment_id])
        except PaymentDeclined:
            continue
        return
    raise Refused("payment failed")
