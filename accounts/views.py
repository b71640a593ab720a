import re
from datetime import UTC, date, datetime
from uuid import uuid4

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from accounts.exceptions import DomainError, StaleVersion
from accounts.forms import AccountEditForm, TransferForm
from accounts.selectors import (
    STATEMENT_PAGE_SIZE,
    TRANSFER_PAGE_SIZE,
    account_get,
    account_list,
    ledger_entries,
    transfer_list,
)
from accounts.services import account_update, transfer_create
from core.money import money_format
from core.pagination import cursor_parse, keyset_page


def transfers_as_seen_by(transfers, user):
    """Mark each transfer in, out or between the user's own accounts (no query: both accounts
    are joined already)."""
    for transfer in transfers:
        outgoing = transfer.source.owner_id == user.pk
        incoming = transfer.target.owner_id == user.pk
        transfer.direction = "own" if outgoing and incoming else "out" if outgoing else "in"
    return transfers


@login_required
def overview(request):
    return render(
        request,
        "accounts/overview.html",
        {
            "accounts": account_list(owner=request.user),
            "transfers": transfers_as_seen_by(
                transfer_list(owner=request.user, limit=10), request.user
            ),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def transfer_create_view(request):
    if request.method == "POST":
        form = TransferForm(request.POST, owner=request.user)
        if form.is_valid():
            data = form.cleaned_data
            try:
                transfer = transfer_create(
                    source_id=data["source"].pk,
                    target_id=data["target"].pk,
                    amount=data["amount"],
                    idempotency_key=data["idempotency_key"],
                    memo=data["memo"],
                    actor=request.user,
                )
            except DomainError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(
                    request,
                    f"Transfer #{transfer.pk}: {money_format(transfer.amount, data['source'].currency)}"
                    f" sent from {data['source'].name} to {data['target'].name}.",
                )
                return redirect("accounts:transfer_list")
        return render(request, "accounts/transfer_form.html", {"form": form}, status=400)
    form = TransferForm(owner=request.user, initial={"idempotency_key": uuid4().hex})
    return render(request, "accounts/transfer_form.html", {"form": form})


@login_required
def transfer_list_view(request):
    page = keyset_page(
        lambda **cursor: transfer_list(owner=request.user, **cursor),
        after=cursor_parse(request.GET.get("after")),
        before=cursor_parse(request.GET.get("before")),
        size=TRANSFER_PAGE_SIZE,
    )
    return render(
        request,
        "accounts/transfer_list.html",
        {"transfers": transfers_as_seen_by(page.items, request.user), "page": page},
    )


@login_required
@require_http_methods(["GET", "POST"])
def account_edit(request, account_id: int):
    account = account_get(owner=request.user, account_id=account_id)
    if account is None:
        raise Http404("No such account.")
    if request.method == "POST":
        form = AccountEditForm(request.POST)
        if form.is_valid():
            try:
                account_update(
                    account_id=account.pk,
                    expected_version=form.cleaned_data["version"],
                    name=form.cleaned_data["name"],
                )
            except StaleVersion as exc:
                return render(
                    request,
                    "accounts/conflict.html",
                    {"current": exc.current, "submitted": form.cleaned_data},
                    status=409,
                )
            except DomainError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Account “{form.cleaned_data['name']}” saved.")
                return redirect("accounts:overview")
        return render(
            request, "accounts/account_form.html", {"form": form, "account": account}, status=400
        )
    form = AccountEditForm(initial={"name": account.name, "version": account.version})
    return render(request, "accounts/account_form.html", {"form": form, "account": account})


MONTH = re.compile(r"(\d{4})-(\d{2})", re.ASCII)


def month_parse(raw: str | None) -> date:
    """``?month=YYYY-MM`` (default: this month, UTC); anything else is a 400."""
    if raw in (None, ""):
        today = datetime.now(UTC).date()
        return date(today.year, today.month, 1)
    match = MONTH.fullmatch(raw)
    if not match or not (1900 <= int(match[1]) <= 9998 and 1 <= int(match[2]) <= 12):
        raise BadRequest("Malformed month: use YYYY-MM.")
    return date(int(match[1]), int(match[2]), 1)


def _month_step(month: date, step: int) -> date:
    months = month.year * 12 + month.month - 1 + step
    return date(months // 12, months % 12 + 1, 1)


@login_required
def account_statement(request, account_id: int):
    """One month of an account's ledger, a page at a time: the query names the month, so the
    partitioned ledger reads one partition."""
    account = account_get(owner=request.user, account_id=account_id)
    if account is None:
        raise Http404("No such account.")
    month = month_parse(request.GET.get("month"))
    page = keyset_page(
        lambda **cursor: ledger_entries(account_id=account.pk, month=month, **cursor),
        after=cursor_parse(request.GET.get("after")),
        before=cursor_parse(request.GET.get("before")),
        size=STATEMENT_PAGE_SIZE,
    )
    return render(
        request,
        "accounts/statement.html",
        {
            "account": account,
            "month": month,
            "previous": _month_step(month, -1),
            "next": _month_step(month, 1) if month.year < 9998 else None,
            "page": page,
            "pager_query": f"month={month:%Y-%m}&",
        },
    )
