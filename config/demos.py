"""Patterns shown on demand: each page provokes the situation a pattern is for, with real data."""

from __future__ import annotations

import inspect
from contextlib import AbstractContextManager, nullcontext
from decimal import Decimal

from django.apps import apps
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_http_methods

from accounts.exceptions import AccountsError
from accounts.forms import AccountEditForm
from accounts.models import Account
from accounts.selectors import account_get, account_list
from accounts.services import account_update, transfer_batch
from core.ids import id_parse
from core.money import money_format
from dbops.instrumentation import track_queries
from orders.models import Order
from orders.selectors import order_list
from orders.views import customer_or_staff_required

DEMO_ORDERS = 20
RENAMED_ELSEWHERE = " (renamed elsewhere)"


def orders_naive(*, customer_id: int | None = None, limit: int = DEMO_ORDERS) -> list[Order]:
    """The orders list as first written: correct, and one query per order, item and product."""
    orders = Order.objects.order_by("-pk")
    if customer_id is not None:
        orders = orders.filter(customer_id=customer_id)
    return list(orders[:limit])


# The one N+1 written on purpose: the naive list exists to show it. Allowed here, in this block
# only and by field, so the same relations stay checked everywhere else (ZEAL_ALLOWLIST in
# config/settings/nplusone.py stays empty). zeal is installed by the local and test settings only.
NAIVE_LIST_N_PLUS_ONE = [
    {"model": "orders.Order", "field": "customer"},
    {"model": "orders.Order", "field": "items"},
    {"model": "orders.OrderItem", "field": "product"},
]


def _n_plus_one_allowed(fetch) -> AbstractContextManager:
    if fetch is not orders_naive or not apps.is_installed("zeal"):
        return nullcontext()
    from zeal import zeal_ignore

    return zeal_ignore(NAIVE_LIST_N_PLUS_ONE)


def _measured(fetch, **kwargs) -> dict:
    """Fetch the orders and render the table, counting every query both run."""
    with track_queries() as stats, _n_plus_one_allowed(fetch):
        html = render_to_string("patterns/_orders_compact.html", {"orders": fetch(**kwargs)})
    return {
        "html": html,
        "queries": stats.count,
        "ms": stats.total_ms,
        "code": inspect.getsource(fetch),
    }


@customer_or_staff_required
def n_plus_one(request, *, scope):
    """The same 20 orders rendered by the same template, from the selector and the naive way."""
    selector = _measured(order_list, customer_id=scope, limit=DEMO_ORDERS)
    naive = _measured(orders_naive, customer_id=scope, limit=DEMO_ORDERS)
    return render(
        request,
        "patterns/n_plus_one.html",
        {"selector": selector, "naive": naive, "limit": DEMO_ORDERS, "scope": scope},
    )


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
    other = account_update(
        account_id=account.pk, expected_version=account.version, name=_other_name(account.name)
    )
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
        outcome = transfer_batch(items=items, actor=request.user)
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
