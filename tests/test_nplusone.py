"""Strict loading in every test: django-zeal turns an N+1 into an error, and it cannot be off.

tests/conftest.py runs every test inside ``zeal_context()``; the test settings add zeal's
middleware, so every request (test client, gunicorn started by a test) is its own unit of work.
"""

import subprocess
import sys

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.contrib.auth.models import Group
from django.http import HttpResponse
from django.urls import path
from zeal import NPlusOneError, zeal_ignore

from dbops.models import BackfillRun
from orders.models import Order, PriceRaiseRun
from tests.factories import customer_create, user_create
from tests.helpers import ROOT, in_threads, run_command


def three_orders():
    for _ in range(3):
        Order.objects.create(customer=customer_create(), total=0)


def customers_of_every_order():
    return [order.customer.name for order in Order.objects.order_by("pk")]


def lazy_list_view(request):
    return HttpResponse(", ".join(customers_of_every_order()))


urlpatterns = [path("lazy/", lazy_list_view)]


@pytest.mark.django_db
def test_a_relation_loaded_per_row_raises():
    three_orders()
    with pytest.raises(NPlusOneError, match=r"orders\.Order\.customer"):
        customers_of_every_order()


@pytest.mark.django_db
def test_the_same_rows_loaded_eagerly_pass():
    three_orders()
    names = [o.customer.name for o in Order.objects.select_related("customer")]
    assert len(names) == 3


@pytest.mark.django_db
@pytest.mark.urls("tests.test_nplusone")
def test_a_page_with_an_n_plus_one_fails_the_request(client):
    three_orders()
    with pytest.raises(NPlusOneError):
        client.get("/lazy/")


@pytest.mark.django_db(transaction=True)
def test_an_n_plus_one_in_a_worker_thread_raises():
    three_orders()
    with pytest.raises(NPlusOneError):
        in_threads(1, lambda i: customers_of_every_order())


@pytest.mark.django_db
def test_an_ignore_that_suppresses_nothing_is_an_error():
    """ZEAL_CHECK_UNUSED_IGNORES: an allowance outlives the N+1 it was written for only loudly."""
    from zeal import UnusedIgnoreError

    with pytest.raises(UnusedIgnoreError):
        with zeal_ignore([{"model": "orders.Order", "field": "customer"}]):
            list(Order.objects.select_related("customer"))


@pytest.mark.django_db
def test_every_admin_page_loads_without_an_n_plus_one(client):
    """Changelist, change page and add page of every registered model, three rows or more each."""
    run_command("seed_demo", accounts=6, customers=5, products=5, orders=12, verbosity=0)
    for n in range(3):
        BackfillRun.objects.create(target=f"orders.Customer.f{n}", options={}, status="done")
        PriceRaiseRun.objects.create(percent=n + 1, batch_size=1000)
        Group.objects.create(name=f"group {n}")
        # The login throttle's records (django-axes), in the admin too.
        who = {"username": f"u{n}", "ip_address": f"10.0.0.{n}", "user_agent": "ua"}
        AccessAttempt.objects.create(**who, failures_since_start=1)
        AccessLog.objects.create(**who)
        AccessFailureLog.objects.create(**who, locked_out=False)
    client.force_login(user_create("root", is_staff=True, is_superuser=True))
    for model in admin.site._registry:
        base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        assert model._default_manager.count() >= 3, base
        assert client.get(base).status_code == 200, base
        first = model._default_manager.order_by("pk").first()
        if first is not None:
            assert client.get(f"{base}{first.pk}/change/").status_code == 200, base
        assert client.get(f"{base}add/").status_code in (200, 403), base


SETTINGS_PROBE = (
    "from django.conf import settings as s; "
    "print('zeal' in s.INSTALLED_APPS, 'zeal.middleware.zeal_middleware' in s.MIDDLEWARE, "
    "getattr(s, 'ZEAL_RAISE', None))"
)


@pytest.mark.parametrize(
    "module, expected",
    [
        ("test", ["True", "True", "True"]),  # an N+1 fails the test
        ("local", ["True", "True", "False"]),  # a warning with file and line; the page renders
        ("production", ["False", "False", "None"]),  # never patched in production
    ],
)
def test_n_plus_one_detection_is_on_in_tests_a_warning_locally_and_absent_in_production(
    module, expected
):
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
        "EMBEDDED_PG_AUTOSTART": "false",
        "DJANGO_SETTINGS_MODULE": f"config.settings.{module}",
        "DJANGO_SECRET_KEY": "k" * 50,
        "DJANGO_ALLOWED_HOSTS": "shop.example.com",
    }
    result = subprocess.run(
        [sys.executable, "-c", SETTINGS_PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == expected, result.stderr
