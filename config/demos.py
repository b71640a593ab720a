"""Patterns shown on demand: each page provokes the situation a pattern is for, with real data."""

from __future__ import annotations

import inspect
from contextlib import AbstractContextManager, nullcontext
from decimal import Decimal

from django.apps import apps
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_http_methods

from accounts.exceptions import AccountsError
from accounts.forms import AccountEditForm
from accounts.models import Account, Transfer
from accounts.selectors import account_get, account_list, transfer_list
from accounts.services import account_update, transfer_batch
from core.exceptions import BUSY_MESSAGE
from core.ids import id_parse
from core.money import money_format
from dbops.instrumentation import track_queries
from dbops.transactions import ServiceTransactionFailed
from orders.models import Order
from orders.selectors import _orders_with_details, customer_of_user, order_list

DEMO_ORDERS = 20
RENAMED_ELSEWHERE = " (renamed elsewhere)"


def orders_naive(*, customer_id: int | None = None, limit: int = DEMO_ORDERS) -> list[Order]:
    """The orders list as first written: correct, and one query per order, item and product."""
    orders = Order.objects.order_by("-pk")
    if customer_id is not None:
        orders = orders.filter(customer_id=customer_id)
    return list(orders[:limit])


def transfers_naive(*, owner, limit: int = DEMO_ORDERS) -> list[Transfer]:
    """A person's transfers as first written: correct, and two queries more per transfer (its
    source and target accounts, each loaded when the row shows its name)."""
    mine = Q(source__owner=owner) | Q(target__owner=owner)
    return list(Transfer.objects.filter(mine).order_by("-pk")[:limit])


# The N+1s written on purpose: the naive lists exist to show them. Allowed here, in this block
# only and by field, so the same relations stay checked everywhere else (ZEAL_ALLOWLIST in
# config/settings/nplusone.py stays empty). zeal is installed by the local and test settings only.
NAIVE_LIST_N_PLUS_ONE = [
    {"model": "orders.Order", "field": "customer"},
    {"model": "orders.Order", "field": "items"},
    {"model": "orders.OrderItem", "field": "product"},
]
NAIVE_TRANSFERS_N_PLUS_ONE = [
    {"model": "accounts.Transfer", "field": "source"},
    {"model": "accounts.Transfer", "field": "target"},
]


def _n_plus_one_allowed(fetch) -> AbstractContextManager:
    allowed = {orders_naive: NAIVE_LIST_N_PLUS_ONE, transfers_naive: NAIVE_TRANSFERS_N_PLUS_ONE}
    if fetch not in allowed or not apps.is_installed("zeal"):
        return nullcontext()
    from zeal import zeal_ignore

    return zeal_ignore(allowed[fetch])


def _measured(fetch, template: str, code: tuple, **kwargs) -> dict:
    """Fetch the rows and render the table, counting every query both run; ``code`` is what the
    page shows of how the rows were fetched: the functions that build the query."""
    with track_queries() as stats, _n_plus_one_allowed(fetch):
        html = render_to_string(template, {"rows": fetch(**kwargs)})
    return {
        "html": html,
        "queries": stats.count,
        "ms": stats.total_ms,
        "code": "\n\n".join(inspect.getsource(function) for function in code),
    }


@login_required
def n_plus_one(request):
    """The same 20 rows rendered by the same template, from the selector and the naive way: the
    orders (staff: everyone's; a customer: theirs), or for a login without a customer profile,
    its own transfers (orders are customers' personal data)."""
    user = request.user
    customer = None if user.is_staff else customer_of_user(user=user)
    if user.is_staff or customer is not None:
        scope = customer.pk if customer else None
        kind, template = "orders", "patterns/_orders_compact.html"
        code = (_orders_with_details, order_list)
        selector = _measured(order_list, template, code, customer_id=scope, limit=DEMO_ORDERS)
        naive = _measured(orders_naive, template, (orders_naive,), customer_id=scope)
    else:
        scope, kind, template = user.pk, "transfers", "patterns/_transfers_compact.html"
        selector = _measured(
            transfer_list, template, (transfer_list,), owner=user, limit=DEMO_ORDERS
        )
        naive = _measured(transfers_naive, template, (transfers_naive,), owner=user)
    context = {"selector": selector, "naive": naive, "limit": DEMO_ORDERS, "scope": scope}
    return render(request, "patterns/n_plus_one.html", context | {"kind": kind})


def _other_name(name: str) -> str:
    if name.endswith(RENAMED_ELSEWHERE):
        return name.removesuffix(RENAMED_ELSEWHERE)
    return (
        name[: Account._meta.get_field("name").max_length - len(RENAMED_ELSEWHERE)]
        + RENAMED_ELSEWHERE
    )


@login_required
@require_http_methods(["GET", "POST"])
def edit_conflict(request):
    """Open an account's edit form, let "someone else" save first, then hand the stale form over:
    saving it shows the 409 conflict page, and the other edit is kept."""
    accounts = list(account_list(owner=request.user))
    if request.method == "GET":
        return render(request, "patterns/edit_conflict.html", {"accounts": accounts})
    account_id = id_parse(request.POST.get("account"))  # ASCII digits only: "١٢" is not 12
    account = account_get(owner=request.user, account_id=account_id) if account_id else None
    if account is None:
        messages.error(request, "Choose one of your accounts.")
        return redirect("patterns:conflict")
    seen = AccountEditForm(initial={"name": account.name, "version": account.version})
    # The other editor, a moment later: same service, same version, saves first.
    try:
        other = account_update(
            account_id=account.pk, expected_version=account.version, name=_other_name(account.name)
        )
    except ServiceTransactionFailed:
        messages.error(request, BUSY_MESSAGE)
        return render(request, "patterns/edit_conflict.html", {"accounts": accounts}, status=409)
    note = (
        f"While this form was open, someone else saved version {other.version} "
        f"(renamed it to “{other.name}”). This form still carries version {account.version}: "
        "change the name and save to see what happens."
    )
    return render(
        request,
        "accounts/account_form.html",
        {"form": seen, "account": account, "stale_note": note},
    )


@login_required
@require_http_methods(["GET", "POST"])
def batch(request):
    """Three transfers in one transaction, the middle one impossible: a savepoint per item."""
    pair = _same_currency_pair(account_list(owner=request.user))
    result = None
    if request.method == "POST" and pair is not None:
        a, b = pair
        items = [
            {
                "source_id": a.pk,
                "target_id": b.pk,
                "amount": Decimal("1.00"),
                "memo": "batch demo 1/3",
            },
            {
                "source_id": a.pk,
                "target_id": b.pk,
                "amount": a.balance + 1,
                "memo": "batch demo 2/3 (more than the balance)",
            },
            {
                "source_id": b.pk,
                "target_id": a.pk,
                "amount": Decimal("1.00"),
                "memo": "batch demo 3/3",
            },
        ]
        try:
            outcome = transfer_batch(items=items, actor=request.user)
        except ServiceTransactionFailed:
            messages.error(request, BUSY_MESSAGE)
            return render(request, "patterns/batch.html", {"pair": pair}, status=409)
        result = _batch_rows(items, outcome, {a.pk: a, b.pk: b})
    return render(request, "patterns/batch.html", {"pair": pair, "result": result})


def _same_currency_pair(accounts) -> tuple[Account, Account] | None:
    by_currency: dict[str, list[Account]] = {}
    for account in accounts:
        by_currency.setdefault(account.currency, []).append(account)
    for same in by_currency.values():
        if len(same) >= 2:
            return same[0], same[1]
    return None


def _batch_rows(items, outcome, accounts) -> list[dict]:
    failed: dict[int, AccountsError] = dict(outcome.failed)
    done = dict(outcome.succeeded)
    rows = []
    for index, item in enumerate(items):
        source, target = accounts[item["source_id"]], accounts[item["target_id"]]
        rows.append(
            {
                "n": index + 1,
                "what": f"{money_format(item['amount'], source.currency)} from {source.name} to {target.name}",
                "transfer": done.get(index),
                "error": failed.get(index),
            }
        )
    return rows
