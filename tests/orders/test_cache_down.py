"""The cache server down (``REDIS_URL`` set, nothing answering): the catalog reads the database,
the pages answer, and a change that committed is never answered with a 500 because the catalog's
invalidation (``transaction.on_commit``) could not reach the cache.

No Redis server is needed: ``CACHES`` points a real RedisCache at a port of this machine that
nothing listens on, so every call is refused by the kernel, as it is when the server is down."""

import logging
import socket
import time
import types

import pytest
from django.core.cache.backends import locmem

from orders import selectors
from orders.models import Order, Product
from orders.selectors import CATALOG_CACHE_SECONDS, product_catalog
from orders.services import product_restock
from tests.factories import customer_create, product_create, user_create
from tests.orders.test_views import order_form

pytestmark = pytest.mark.django_db(transaction=True)  # real commits: on_commit runs for real


def closed_port() -> int:
    """A port nothing listens on: bound by the kernel's choice, then closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_down() -> dict:
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }


@pytest.fixture
def cache_down(settings, caplog):
    caplog.set_level(logging.WARNING, logger="orders.catalog")
    settings.CACHES = redis_down()
    return caplog


def catalog_warnings(caplog, what: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "orders.catalog"
        and r.levelno == logging.WARNING
        and r.getMessage().startswith(f"catalog cache unavailable, {what}: ConnectionError")
    ]


@pytest.fixture
def shopper(client):
    user = user_create("carol")
    client.force_login(user)
    customer_create(user=user)
    return client


@pytest.fixture
def staff(client):
    client.force_login(user_create("boss", is_staff=True))
    return client


def test_product_pages_and_the_order_form_answer_from_the_database(shopper, cache_down):
    product = product_create(stock=5)
    listed = shopper.get("/orders/products/")
    assert listed.status_code == 200 and product.name in listed.content.decode()
    shown = shopper.get(f"/orders/products/{product.pk}/")
    assert shown.status_code == 200 and product.name in shown.content.decode()

    form = shopper.get("/orders/new/?key=order-key-1")
    assert form.status_code == 200
    assert f"{product.name} · " in form.content.decode()
    # One warning for the one catalog read (the formset reads it once), with the reason.
    assert len(catalog_warnings(cache_down, "read")) == 1
    assert "127.0.0.1" in catalog_warnings(cache_down, "read")[0]


def test_placing_an_order_answers_302_and_commits_it_once(shopper, cache_down):
    product = product_create(stock=5)
    response = shopper.post("/orders/new/", order_form([(product.pk, 2)]))
    assert response.status_code == 302
    order = Order.objects.get()
    assert response["Location"] == f"/orders/{order.pk}/"
    assert Product.objects.get(pk=product.pk).stock == 3
    assert shopper.get(response["Location"]).status_code == 200
    # The form read the catalog, the commit invalidated it: each logged, neither raised.
    assert len(catalog_warnings(cache_down, "read")) == 1
    assert len(catalog_warnings(cache_down, "invalidate")) == 1

    # Sent again (a retry after the 302 got lost): still that one order.
    again = shopper.post("/orders/new/", order_form([(product.pk, 2)]))
    assert again.status_code == 302 and again["Location"] == response["Location"]
    assert Order.objects.count() == 1
    assert Product.objects.get(pk=product.pk).stock == 3


def test_restock_page_answers_302_with_the_change_committed(staff, cache_down):
    product = product_create(stock=5)
    response = staff.post(
        f"/orders/products/{product.pk}/restock/", {"quantity": 4, "version": product.version}
    )
    assert response.status_code == 302
    assert Product.objects.get(pk=product.pk).stock == 9
    assert "9 in stock" in staff.get(response["Location"]).content.decode()
    assert len(catalog_warnings(cache_down, "invalidate")) == 1


def test_admin_product_edit_answers_302_with_the_change_committed(client, cache_down):
    client.force_login(user_create("root", is_staff=True, is_superuser=True))
    product = product_create(stock=5, price="1.00")
    response = client.post(
        f"/admin/orders/product/{product.pk}/change/",
        {"name": "Renamed", "price": "1.00", "stock": "3", "version": product.version},
    )
    assert response.status_code == 302
    product.refresh_from_db()
    assert (product.name, product.stock, product.version) == ("Renamed", 3, 2)
    assert len(catalog_warnings(cache_down, "invalidate")) == 1


def test_a_change_made_during_an_outage_is_seen_within_the_cache_lifetime(
    settings, caplog, monkeypatch
):
    """The trade-off of swallowing the invalidation: a cache that comes back with what it held
    (a network cut, not a restart) serves the catalog stored before the change until that entry
    expires, CATALOG_CACHE_SECONDS after it was stored; never longer. The clock of the
    local-memory cache is moved past that lifetime instead of waiting for it."""
    working = settings.CACHES
    product = product_create(stock=5)
    assert product_catalog()[0]["stock"] == 5  # cached in the working cache

    caplog.set_level(logging.WARNING, logger="orders.catalog")
    settings.CACHES = redis_down()
    product_restock(product_id=product.pk, quantity=4, expected_version=product.version)
    assert len(catalog_warnings(caplog, "invalidate")) == 1
    assert product_catalog()[0]["stock"] == 9  # during the outage: the database

    settings.CACHES = working  # back, still holding the old generation and its catalog
    assert product_catalog()[0]["stock"] == 5  # stale, within the bound

    later = time.time() + CATALOG_CACHE_SECONDS + 1
    monkeypatch.setattr(locmem, "time", types.SimpleNamespace(time=lambda: later))
    assert product_catalog()[0]["stock"] == 9  # the old entry expired: read and stored again


def test_a_programming_error_in_the_cache_is_not_swallowed(settings, monkeypatch):
    """Only the cache server's connection and timeout errors are a miss; a bug still raises."""

    def broken(*args, **kwargs):
        raise TypeError("a bug, not an outage")

    monkeypatch.setattr(selectors.cache, "get_or_set", broken)
    product_create()
    with pytest.raises(TypeError, match="a bug"):
        product_catalog()
