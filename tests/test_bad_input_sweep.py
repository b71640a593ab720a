"""Every URL of the project, resolved from the URLconf, with malformed input in the path, the query
string, the form body and the headers the app reads, as a stranger, a customer and staff: no
response may be a server error, and no request may write a row (sessions and the login throttle's
own records aside)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from urllib.parse import quote, urlencode

import pytest
from axes.models import AccessAttempt
from django.contrib import admin
from django.db import connection
from django.db.models import ForeignKey
from django.test import Client
from django.urls import URLResolver, get_resolver

from accounts.models import Account
from accounts.services import transfer_create
from dbops.models import BackfillRun
from orders.models import Customer, Order
from orders.services import order_place
from tests.factories import account_create, customer_create, product_create, user_create

pytestmark = pytest.mark.django_db

NUL = "1\x00"
# Malformed ids and cursors, non-ASCII digits (which str.isdigit() accepts), values out of range,
# over-long values (past Python's 4300-digit limit for int() too), NUL bytes.
BAD = [
    *["-1", "1.5", "1' OR '1'='1"],
    *["²", "١٢"],
    *["9" * 30, "x" * 3000, "9" * 5000],
    NUL,
]
SOME_BAD = ["-1", "²", "١٢", "9" * 30, "x" * 3000, NUL]
FEW_BAD = ["²", "x" * 3000, NUL]
# Values that are invalid for every form field of the project: only these go to "add" forms, where
# a value like "١٢" (twelve, in Arabic-Indic digits) is a perfectly good product name.
INVALID_FOR_ANY_FORM = ["x" * 3000, "9" * 5000, NUL]
# Query parameters the project's views and Django's admin read, by the pages that read them (an
# unknown parameter ends an admin request early, hiding the others).
APP_PARAMS = ["after", "region", "next", "page"]
ADMIN_PARAMS = ["q", "p", "o", "e", "_popup", "_to_field", "_changelist_filters"]
AUTOCOMPLETE_PARAMS = ["term", "page", "app_label", "model_name", "field_name"]
# Form fields of every form of the project (never "post": any admin delete body with it deletes).
FORM_FIELDS = [
    "username",
    "password",
    "old_password",
    "new_password1",
    "new_password2",
    "password1",
    "password2",
    "name",
    "email",
    "region",
    "user",
    "owner",
    "currency",
    "version",
    "sku",
    "price",
    "stock",
    "source",
    "target",
    "amount",
    "memo",
    "idempotency_key",
    "payment_methods",
    "lines-TOTAL_FORMS",
    "lines-INITIAL_FORMS",
    "lines-0-product",
    "lines-0-quantity",
    "customer",
    "status",
    "total",
    "order",
    "product",
    "quantity",
    "method",
    "action",
    "_selected_action",
    "select_across",
    "index",
]
# Pages whose POST is an action that takes no input (and writes by design), or whose only
# input is a new password: a body of bad values is no bad input to them.
# (A backfill run's Pause button pauses it: a write, for staff, on any POST with its token.)
WRITES_ON_ANY_POST = {
    "patterns:batch",
    "admin:auth_user_password_change",
    "admin:dbops_backfillrun_control",
}
# Writes a sweep request may make: its session, and the login throttle counting failed logins.
BOOKKEEPING_TABLES = {"django_session", "axes_accessattempt", "axes_accessfailurelog"}


def url_patterns() -> Iterator[tuple[str, str | None]]:
    """(route, name) for every URL pattern of the project, namespaces included."""

    def walk(patterns, prefix, namespace):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
            else:
                yield (
                    prefix + str(pattern.pattern),
                    (f"{namespace}{pattern.name}" if pattern.name else None),
                )

    yield from walk(get_resolver().url_patterns, "", "")


PARAM = re.compile(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>[^)]*\)")


def fill(route: str, values: dict[str, str]) -> str:
    """A path from a route (``<int:id>`` or ``(?P<id>...)``), each parameter replaced, quoted."""
    path = PARAM.sub(lambda m: quote(values[m.group(1) or m.group(2)], safe=""), route)
    return "/" + path.removeprefix("^").removesuffix("$").replace("^", "")


def params_of(route: str) -> list[str]:
    return [a or b for a, b in PARAM.findall(route)]


class World:
    """One of everything, so every change page has a real object to open."""

    def __init__(self):
        self.staff = user_create("sweep-staff", is_staff=True, is_superuser=True)
        self.person = user_create("sweep-person")
        source = account_create(owner=self.person, balance="100")
        target = account_create(owner=self.person)
        transfer_create(source_id=source.pk, target_id=target.pk, amount=Decimal("1"))
        customer = customer_create(user=self.person)
        product = product_create(stock=5)
        order = order_place(customer_id=customer.pk, lines=[(product.pk, 1)])
        # Two more, so the N+1 demo has an N+1 to show (zeal counts one from three queries; with
        # fewer, the demo's zeal allowance goes unused, which test settings make an error).
        for _ in range(2):
            order_place(customer_id=customer.pk, lines=[(product.pk, 1)])
        BackfillRun.objects.create(target="orders.Customer.email_normalized", options={})
        AccessAttempt.objects.create(
            username="x", ip_address="10.0.0.1", user_agent="ua", failures_since_start=1
        )
        self.ids = {
            "account_id": str(source.pk),
            "order_id": str(order.pk),
            "customer_id": str(customer.pk),
            "product_id": str(product.pk),
            "app_label": "orders",
            "url": "nowhere/",
            "action": "pause",
        }

    def valid(self, route: str, name: str | None) -> dict[str, str]:
        """Valid values for the route's parameters (the first object of the admin's model)."""
        values = dict(self.ids)
        model = admin_model(name)
        if model is not None and model.objects.exists():
            values["object_id"] = values["id"] = str(model.objects.order_by("pk").first().pk)
        from django.contrib.contenttypes.models import ContentType

        values["content_type_id"] = str(ContentType.objects.get_for_model(Account).pk)
        values.setdefault("object_id", self.ids["account_id"])
        values.setdefault("id", str(self.staff.pk))
        return values


def admin_model(name: str | None):
    """The model of an admin URL name such as ``admin:orders_customer_change``."""
    if not name or not name.startswith("admin:"):
        return None
    for model in admin.site._registry:
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}_"
        if name.startswith(prefix):
            return model
    return None


def list_filter_params(name: str | None) -> list[str]:
    """The query parameters of an admin changelist's filters and date hierarchy."""
    model = admin_model(name)
    if model is None or not name.endswith("_changelist"):
        return []
    model_admin = admin.site._registry[model]
    params = []
    for spec in model_admin.list_filter:
        if not isinstance(spec, str):
            params.append(spec.parameter_name)
            continue
        field = model._meta.get_field(spec)
        if isinstance(field, ForeignKey):
            params += [f"{spec}__id__exact", f"{spec}__isnull"]
        else:
            params += [f"{spec}__exact", f"{spec}__gte", f"{spec}__lt", f"{spec}__isnull"]
    if model_admin.date_hierarchy:
        params += [f"{model_admin.date_hierarchy}__{part}" for part in ("year", "month", "day")]
    return params


def writes() -> dict[str, int]:
    """Rows inserted, updated or deleted so far in this test's transaction, per table."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_xact_user_tables"
        )
        return {table: n for table, n in cursor.fetchall() if table not in BOOKKEEPING_TABLES}


def requests_for(world: World, route: str, name: str | None, *, staff: bool) -> Iterator[tuple]:
    """(method, path, query, body, headers) probes for one URL pattern."""
    valid = world.valid(route, name)
    good_path = fill(route, valid)
    action = (name or "").rsplit(":", 1)[-1].rsplit("_", 1)[-1]  # "change", "logout", ...
    admin_page = (name or "").startswith("admin:")
    # Every bad value on the project's pages and the admin's autocomplete; one of each kind on the
    # admin's pages, which share their parsing and cost a full page each.
    values = SOME_BAD if admin_page and action != "autocomplete" else BAD
    path_values = SOME_BAD
    if admin_page and not staff and action != "login":
        # The admin sends anyone else to its login page before reading any input: a few suffice.
        values = path_values = FEW_BAD
    # The path: each parameter malformed in turn.
    for param in params_of(route):
        for value in path_values:
            path = fill(route, {**valid, param: value})
            yield "GET", path, None, None, None
            if action != "logout":
                # A delete body with a bad id deletes nothing; with a good one it would delete.
                yield "POST", path, None, {"name": value}, None
    # The query string: the parameters each kind of page reads (an unknown parameter ends an admin
    # request early, and so does a bad filter value: each group goes on its own).
    groups = [ADMIN_PARAMS, list_filter_params(name)] if admin_page else [APP_PARAMS]
    if name == "admin:autocomplete":
        groups = [AUTOCOMPLETE_PARAMS]
    for value in values:
        for group in filter(None, groups):
            yield "GET", good_path, {p: value for p in group}, None, None
    # The form body: every kind of bad value where the page takes a form, a NUL everywhere.
    takes_form = not admin_page or action in ("add", "change", "changelist", "login", "password")
    if action not in ("logout", "delete") and name not in WRITES_ON_ANY_POST:
        for value in values if takes_form else [NUL]:
            if action == "add" and value not in INVALID_FOR_ANY_FORM:
                continue
            yield "POST", good_path, None, {f: value for f in FORM_FIELDS}, None
    # Headers the app reads (the health token; the login throttle's user agent and address),
    # where it reads them, and a NUL in any header anywhere.
    reads_headers = action == "login" or name in ("health:ready", "health:metrics")
    for value in ["x" * 5000, "²", NUL] if reads_headers else [NUL]:
        headers = {h: value for h in ("User-Agent", "X-Health-Token", "X-Forwarded-For", "Accept")}
        yield "GET", good_path, None, None, headers
        headers = {"Authorization": f"Bearer {value}"}
        yield "GET", good_path, None, None, headers
    # The session cookie is read everywhere; a quoted cookie may carry a NUL as an octal escape.
    for cookie in ['sessionid="abcdefgh\\000ijkl"', "sessionid=" + "²" * 40]:
        yield "GET", good_path, None, None, {"Cookie": cookie}


def send(client: Client, method, path, query, body, headers):
    if query:
        path = f"{path}?{urlencode(query)}"
    if method == "GET":
        return client.get(path, headers=headers)
    # URL-encoded, as a browser sends a form (and much faster to build than multipart).
    return client.post(
        path,
        urlencode(body or {}),
        content_type="application/x-www-form-urlencoded",
        headers=headers,
    )


@pytest.fixture
def world():
    return World()


@pytest.mark.parametrize("who", ["stranger", "customer", "staff"])
def test_no_input_gives_a_server_error_or_writes_a_row(world, who, settings):
    # Behind one proxy, so the throttle reads X-Forwarded-For too.
    settings.TRUSTED_PROXY_COUNT = 1
    client = Client(raise_request_exception=False)
    if who != "stranger":
        client.force_login(world.staff if who == "staff" else world.person)
    before = writes()
    errors, count = [], 0
    for route, name in url_patterns():
        for method, path, query, body, headers in requests_for(
            world, route, name, staff=who == "staff"
        ):
            count += 1
            # A forged session cookie makes the response delete the client's own: send it from a
            # client of its own, so the sweep goes on logged in.
            forged = headers is not None and "Cookie" in headers
            response = send(Client() if forged else client, method, path, query, body, headers)
            if response.status_code >= 500:
                shown = f"{method} {path[:80]} {str(query)[:80]} {str(body)[:60]} {headers}"
                errors.append(f"{response.status_code} {shown}")
    assert not errors, f"{len(errors)} of {count} requests failed:\n" + "\n".join(errors[:40])
    assert writes() == before
    # Not vacuous: every pattern of the URLconf, the admin's included, was probed.
    assert count > 1500 and len(list(url_patterns())) > 100
    if who != "stranger":  # still logged in at the end: the probes ran as this person
        assert client.get("/accounts/").status_code == 200
    assert Customer.objects.count() == 1 and Order.objects.count() == 3
