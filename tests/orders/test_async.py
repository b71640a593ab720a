"""Async views the Django way: async ORM for reads, sync services (and their transactions) for
writes, called through sync_to_async; and what the event loop refuses."""

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction, sync_to_async
from django.core.cache import cache
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connection, transaction
from django.test import AsyncClient
from django.test.utils import CaptureQueriesContext
from django.urls import resolve

from orders.models import Product
from orders.selectors import CATALOG_GENERATION_KEY, product_catalog, product_list
from tests.factories import product_create, user_create
from tests.helpers import http_get, raw_connection, uvicorn


def async_client(client, user) -> AsyncClient:
    """An AsyncClient (the async handler and middleware chain) logged in as ``user``."""
    client.force_login(user)
    asynchronous = AsyncClient()
    asynchronous.cookies = client.cookies
    return asynchronous


def get(aclient, path):
    return async_to_sync(aclient.get)(path)


def post(aclient, path, data):
    return async_to_sync(aclient.post)(path, data)


@pytest.mark.parametrize(
    "path", ["/orders/products/", "/orders/products/1/", "/orders/products/1/restock/"]
)
def test_catalog_pages_are_async_views(path):
    assert iscoroutinefunction(resolve(path).func)


@pytest.mark.django_db
def test_async_catalog_page_counts_the_queries_the_async_orm_ran(client):
    for _ in range(3):
        product_create()
    aclient = async_client(client, user_create())
    with CaptureQueriesContext(connection) as captured:
        response = get(aclient, "/orders/products/")
    assert response.status_code == 200
    assert response.content.count(b"/orders/products/") >= 3
    # session, user, the page of products, the count: the same queries, counted in the header
    assert response["X-DB-Query-Count"] == str(len(captured.captured_queries)) == "4"


@pytest.mark.django_db
def test_unknown_product_is_a_404(client):
    aclient = async_client(client, user_create())
    assert get(aclient, "/orders/products/999999/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_async_restock_commits_through_the_sync_service(client):
    product = product_create(stock=5)
    cache.set(CATALOG_GENERATION_KEY, 1, None)
    aclient = async_client(client, user_create(is_staff=True))
    response = post(
        aclient, f"/orders/products/{product.pk}/restock/", {"quantity": 7, "version": 1}
    )
    assert response.status_code == 302
    # Committed: another session sees it at once.
    with raw_connection() as other:
        row = other.execute(
            "SELECT stock, version FROM orders_product WHERE id = %s", [product.pk]
        ).fetchone()
    assert row == (12, 2)
    # The service's on_commit hook ran after the commit: the catalog cache was invalidated.
    assert cache.get(CATALOG_GENERATION_KEY) == 2
    assert product_catalog()[0]["stock"] == 12


@pytest.mark.django_db(transaction=True)
def test_async_restock_of_a_stale_version_is_a_409_and_writes_nothing(client):
    product = product_create(stock=5)
    aclient = async_client(client, user_create(is_staff=True))
    post(aclient, f"/orders/products/{product.pk}/restock/", {"quantity": 1, "version": 1})
    stale = post(aclient, f"/orders/products/{product.pk}/restock/", {"quantity": 50, "version": 1})
    assert stale.status_code == 409
    assert b"changed by someone else" in stale.content
    assert Product.objects.values_list("stock", "version").get(pk=product.pk) == (6, 2)


@pytest.mark.django_db
@pytest.mark.parametrize("data", [{"quantity": 0, "version": 1}, {"quantity": "x", "version": 1}])
def test_async_restock_bad_input_is_a_400_and_writes_nothing(client, data):
    product = product_create(stock=5)
    aclient = async_client(client, user_create(is_staff=True))
    assert post(aclient, f"/orders/products/{product.pk}/restock/", data).status_code == 400
    assert Product.objects.values_list("stock", "version").get(pk=product.pk) == (5, 1)


@pytest.mark.django_db
def test_async_restock_is_for_staff_only(client):
    product = product_create(stock=5)
    aclient = async_client(client, user_create())
    response = post(
        aclient, f"/orders/products/{product.pk}/restock/", {"quantity": 1, "version": 1}
    )
    assert response.status_code == 403
    assert Product.objects.get(pk=product.pk).stock == 5


@pytest.mark.django_db(transaction=True)
def test_a_transaction_cannot_be_opened_in_the_event_loop():
    """Why writes stay in sync services: atomic() needs the connection of one thread."""

    async def write_in_the_event_loop():
        with transaction.atomic():
            await Product.objects.acreate(sku="NO", name="No", price=1, stock=1)

    with pytest.raises(SynchronousOnlyOperation):
        async_to_sync(write_in_the_event_loop)()
    assert not Product.objects.filter(sku="NO").exists()


@pytest.mark.django_db
def test_a_deferred_column_cannot_be_loaded_lazily_in_async_code():
    """Async code is strict by construction: a lazy load would be a synchronous query."""
    product_create(description="Long text.")

    async def read_descriptions():
        return [product.description async for product in product_list()]

    with pytest.raises(SynchronousOnlyOperation):
        async_to_sync(read_descriptions)()


@pytest.mark.django_db
def test_a_sync_selector_runs_from_async_code_through_sync_to_async():
    product_create(stock=4)

    async def catalog():
        return await sync_to_async(product_catalog)()

    assert [p["stock"] for p in async_to_sync(catalog)()] == [4]


@pytest.mark.django_db(transaction=True)
def test_under_uvicorn_the_async_page_serves_and_counts_its_worker_thread_queries(client):
    """A real ASGI server: each request's ORM calls run in a thread of that request, not in the
    event loop's, and the header still counts them. Pooled connections, as Django advises for
    ASGI (a persistent connection would belong to a thread that ends with the request)."""
    for _ in range(3):
        product_create()
    client.force_login(user_create())
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    with uvicorn(DB_POOL="true", DB_POOL_MAX_SIZE="4") as base:
        status, headers, body = http_get(base + "/orders/products/", headers={"Cookie": cookie})
    assert status == 200 and body.count(b"/orders/products/") >= 3
    assert headers["X-DB-Query-Count"] == "4"  # session, user, products, count
