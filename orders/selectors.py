"""Every read the orders pages need, in a fixed number of queries whatever the number of rows."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.core.cache import cache
from django.db import connections
from django.db.models import Count, Prefetch, Q, QuerySet, Sum

from core.pagination import KeysetPage, keyset_cursors_check, keyset_page_of, keyset_slice
from orders.exceptions import UnknownRegion
from orders.models import Customer, Order, OrderItem, OrderStatus, Product, Region

ORDER_PAGE_SIZE = 50
TOP_CUSTOMERS_LIMIT = 100
PRODUCT_PAGE_SIZE = 50
CATALOG_CACHE_KEY = "orders:catalog:v1"
CATALOG_GENERATION_KEY = "orders:catalog:generation"
CATALOG_CACHE_SECONDS = 300

logger = logging.getLogger("orders.catalog")


def _orders_with_details() -> QuerySet[Order]:
    # The items' products without their descriptions: no order page shows them, and a list of 50
    # orders would otherwise carry a few KB of text per item line.
    items = OrderItem.objects.select_related("product").defer("product__description").order_by("pk")
    return (
        Order.objects.select_related("customer")
        .prefetch_related(Prefetch("items", queryset=items))
        .annotate(item_count=Count("items"))
    )


def order_list(
    *,
    customer_id: int | None = None,
    after: int | None = None,
    before: int | None = None,
    limit: int = ORDER_PAGE_SIZE,
) -> list[Order]:
    """Newest orders first, ``limit`` older than the keyset cursor ``after`` (an order id), or with
    ``before``, the ``limit`` just newer than it: two queries.

    One query for the orders with their customers joined and item counts annotated, one for all
    their items with products joined; never one per order.
    """
    orders = _orders_with_details()
    if customer_id is not None:
        orders = orders.filter(customer_id=customer_id)
    return keyset_slice(orders, after=after, before=before, limit=limit)


def order_get(*, order_id: int, customer_id: int | None = None) -> Order | None:
    """One order with customer, items, products and payments; None if absent or not the customer's."""
    orders = _orders_with_details().prefetch_related("payments").filter(pk=order_id)
    if customer_id is not None:
        orders = orders.filter(customer_id=customer_id)
    return orders.first()


def order_by_key(*, customer_id: int, key: str) -> Order | None:
    """The order that the one-time key ``key`` of a form placed for the customer, with its lines
    (product and quantity); None if the key has not been used. Two queries: the order through the
    unique index on (customer, idempotency_key), its lines."""
    lines = OrderItem.objects.only("order_id", "product_id", "quantity").order_by("pk")
    found = Order.objects.filter(customer_id=customer_id, idempotency_key=key).prefetch_related(
        Prefetch("items", queryset=lines)
    )
    return next(iter(found.order_by()[:1]), None)


def customer_of_user(*, user) -> Customer | None:
    """The customer profile of a login, or None. No query when the profile came joined to the
    user, as it does for the request's user (``config.auth.UserWithProfileBackend``)."""
    if Customer.user.field.remote_field.is_cached(user):
        return getattr(user, "customer", None)
    return Customer.objects.filter(user=user).first()


def customer_get(*, customer_id: int) -> Customer | None:
    """A customer with their paid order count and total spent, computed in SQL."""
    paid = Q(orders__status=OrderStatus.PAID)
    return (
        Customer.objects.select_related("user")
        .annotate(
            order_count=Count("orders", filter=paid), total_spent=Sum("orders__total", filter=paid)
        )
        .filter(pk=customer_id)
        .first()
    )


def product_list(*, after: int | None = None, limit: int = PRODUCT_PAGE_SIZE) -> QuerySet[Product]:
    """Products newest first (by id), ``limit`` older than the keyset cursor ``after``, without
    their descriptions: a list never shows them. Lazy, one query when evaluated (``list()`` it,
    or ``async for`` in an async view)."""
    products = Product.objects.defer("description").order_by("-pk")
    if after is not None:
        products = products.filter(pk__lt=after)
    return products[:limit]


async def aproduct_page(
    *, after: int | None = None, before: int | None = None, size: int = PRODUCT_PAGE_SIZE
) -> tuple[KeysetPage, int]:
    """A keyset page of the catalog for an async view (the pager of every list: Newer, Older),
    and how many products there are in all.

    The async ORM still runs each of the two queries in a worker thread (``sync_to_async``); what
    it frees is the event loop, which serves other requests while they run.
    """
    keyset_cursors_check(after, before)
    if before is not None:
        newer = Product.objects.defer("description").filter(pk__gt=before).order_by("pk")
        rows = [product async for product in newer[: size + 1]][::-1]
    else:
        rows = [product async for product in product_list(after=after, limit=size + 1)]
    page = keyset_page_of(rows, after=after, before=before, size=size)
    return page, await Product.objects.acount()


async def aproduct_get(*, product_id: int) -> Product | None:
    """One product, description included (its page shows it), or None."""
    return await Product.objects.filter(pk=product_id).afirst()


@dataclass(frozen=True)
class TopCustomer:
    customer_id: int
    name: str
    region: str
    orders: int
    total: Decimal
    region_rank: int

    @property
    def region_label(self) -> str:
        return Region(self.region).label


TOP_CUSTOMERS_SQL = """
WITH spend AS (
    SELECT c.id, c.name, c.region, count(o.id) AS orders, sum(o.total) AS total
      FROM orders_customer c
      JOIN orders_order o ON o.customer_id = c.id AND o.status = %(paid)s
     WHERE %(region)s::text IS NULL OR c.region = %(region)s::text
     GROUP BY c.id
)
SELECT id, name, region, orders, total,
       rank() OVER (PARTITION BY region ORDER BY total DESC) AS region_rank
  FROM spend
 ORDER BY total DESC, id
 LIMIT %(limit)s
"""


def region_clean(region: str | None) -> str | None:
    if region in (None, ""):
        return None
    if region not in Region.values:
        raise UnknownRegion(region, Region.values)
    return region


def report_top_customers(
    *, region: str | None = None, limit: int = TOP_CUSTOMERS_LIMIT, using: str = "default"
) -> list[TopCustomer]:
    """Customers by paid spend, with their rank within their region (a CTE and a window function).

    Ties share a rank (``rank()``). Raw SQL, parameterized: no value is ever formatted into it.
    """
    region = region_clean(region)
    limit = max(1, min(int(limit), 1000))
    with connections[using].cursor() as cursor:
        cursor.execute(
            TOP_CUSTOMERS_SQL, {"paid": OrderStatus.PAID, "region": region, "limit": limit}
        )
        return [TopCustomer(*row) for row in cursor.fetchall()]


@dataclass(frozen=True)
class DailySales:
    day: date
    orders: int
    revenue: Decimal


DAILY_SALES_SQL = """
WITH sales AS (
    SELECT o.created_at, o.total
      FROM orders_order o
      JOIN orders_customer c ON c.id = o.customer_id
     WHERE o.status = %(paid)s
       AND o.created_at >= current_date - (%(days)s - 1)
       AND (%(region)s::text IS NULL OR c.region = %(region)s::text)
)
SELECT d::date AS day, count(s.created_at) AS orders, coalesce(sum(s.total), 0) AS revenue
  FROM generate_series(current_date - (%(days)s - 1), current_date, interval '1 day') AS d
  LEFT JOIN sales s ON s.created_at >= d AND s.created_at < d + interval '1 day'
 GROUP BY d
 ORDER BY d
"""


def report_daily_sales(
    *, days: int = 14, region: str | None = None, using: str = "default"
) -> list[DailySales]:
    """Paid orders and revenue per day for the last ``days`` days, empty days included; only
    the customers of ``region`` when one is given."""
    days = max(1, min(int(days), 366))
    region = region_clean(region)
    with connections[using].cursor() as cursor:
        cursor.execute(DAILY_SALES_SQL, {"days": days, "paid": OrderStatus.PAID, "region": region})
        return [DailySales(*row) for row in cursor.fetchall()]


class _CacheDown(Exception):
    """The cache server did not answer; the message says why (logged already)."""


def _cache_errors() -> tuple[type[Exception], ...]:
    """The errors of a cache server that is down, unreachable or too slow: the Redis client's
    connection and timeout errors (imported here, so a project without ``redis`` installed, on the
    local-memory cache, does not need it). A programming error is none of these."""
    try:
        from redis.exceptions import ConnectionError, TimeoutError
    except ImportError:  # pragma: no cover - no Redis client, so no Redis cache to fail
        return ()
    return (ConnectionError, TimeoutError)


def _cache_call(what: str, call, *args):
    """``call(*args)`` on the cache, or ``_CacheDown`` after one WARNING on the ``orders.catalog``
    logger naming ``what`` and the reason, when the cache server does not answer. The catalog
    treats the cache as optional: the database has every row it holds."""
    try:
        return call(*args)
    except _cache_errors() as exc:
        logger.warning("catalog cache unavailable, %s: %s: %s", what, type(exc).__name__, exc)
        raise _CacheDown(str(exc)) from exc


def _catalog_key() -> str:
    generation = _cache_call("read", cache.get_or_set, CATALOG_GENERATION_KEY, 1, None)
    return f"{CATALOG_CACHE_KEY}:{generation}"


def _catalog_rows() -> list[dict]:
    return list(
        Product.objects.order_by("sku").values("id", "sku", "name", "price", "stock", "version")
    )


def product_catalog() -> list[dict]:
    """Products for sale, cached; invalidated after any commit that changes a product.

    The cache key carries a generation that invalidation bumps. A reader that loaded the rows
    just before a change commits stores them under the old generation, where nobody looks again,
    so it cannot put stale data back after the invalidation.

    The cache is optional: a cache server that is down or does not answer within its timeout is a
    miss (one WARNING), and the rows come from the database, with no attempt to store them.
    """
    try:
        key = _catalog_key()
        catalog = _cache_call("read", cache.get, key)
    except _CacheDown:
        return _catalog_rows()
    if catalog is None:
        catalog = _catalog_rows()
        try:
            _cache_call("store", cache.set, key, catalog, CATALOG_CACHE_SECONDS)
        except _CacheDown:
            pass  # served from the database all the same
    return catalog


def catalog_invalidate() -> None:
    """Run through transaction.on_commit: only a committed change invalidates.

    Never raises for a cache server that is down: the change has committed, and its page must
    not answer 500 for it. The failure is logged (WARNING) and swallowed. The trade-off: if the
    cache comes back still holding the old generation (a network cut, not a restart that emptied
    it), the catalog cached under it is served until it expires, at most ``CATALOG_CACHE_SECONDS``
    after it was stored; nothing older than that.
    """
    try:
        try:
            _cache_call("invalidate", cache.incr, CATALOG_GENERATION_KEY)
        except ValueError:
            _cache_call("invalidate", cache.set, CATALOG_GENERATION_KEY, 2, None)
    except _CacheDown:
        pass  # logged by _cache_call; bounded by CATALOG_CACHE_SECONDS, as above
