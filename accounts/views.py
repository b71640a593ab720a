import re
from datetime import UTC, date, datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from accounts.exceptions import DomainError, IdempotencyConflict, StaleVersion
from accounts.forms import AccountEditForm, TransferForm
from accounts.selectors import (
    STATEMENT_PAGE_SIZE,
    TRANSFER_PAGE_SIZE,
    account_get,
    account_list,
    ledger_entries,
    transfer_by_key,
    transfer_list,
)
from accounts.services import account_update, transfer_create
from core.exceptions import BUSY_MESSAGE
from core.forms import form_key, form_key_redirect
from core.money import money_format
from core.pagination import cursor_parse, keyset_page
from dbops.instrumentation import track_queries
from dbops.transactions import ServiceTransactionFailed


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


def _sent_summary(transfer) -> str:
    """ "Transfer #157: 12.34 EUR sent from Main to Savings" """
    amount = money_format(transfer.amount, transfer.source.currency)
    source, target = transfer.source.name, transfer.target.name
    return f"Transfer #{transfer.pk}: {amount} sent from {source} to {target}"


IDEMPOTENCY_CONFLICT_MESSAGE = (
    "This form was already used for another transfer, so nothing was sent. "
    "Start a new transfer to send this one."
)


@login_required
@require_http_methods(["GET", "POST"])
def transfer_create_view(request):
    """One rendering of the form, one key (in the address and the form), one transfer at most:
    Back and Send, a double click or a retry all replay that key (``core.forms.form_key``)."""
    if request.method == "POST":
        return _transfer_submit(request)
    key = form_key(request)
    if key is None:
        return form_key_redirect(request)
    sent = transfer_by_key(owner=request.user, key=key)
    initial = {"idempotency_key": key}
    if sent is not None:
        # Back after sending: the form as it was sent, saying so; Send replays the key.
        initial |= {"source": sent.source_id, "target": sent.target_id, "amount": sent.amount}
        initial |= {"memo": sent.memo}
    form = TransferForm(owner=request.user, initial=initial)
    return render(request, "accounts/transfer_form.html", {"form": form, "sent": sent})


def _transfer_submit(request):
    sent = transfer_by_key(owner=request.user, key=request.POST.get("idempotency_key", ""))
    if sent is not None:
        # This rendering of the form was sent already (Back and Send, a second tab): show what it
        # did, and do nothing more, even if a value was changed since.
        messages.info(
            request, f"{_sent_summary(sent)} by this form before. Nothing was sent again."
        )
        return redirect("accounts:transfer_list")
    form = TransferForm(request.POST, owner=request.user)
    conflict = False
    status = 400
    if form.is_valid():
        data = form.cleaned_data
        try:
            with track_queries() as stats:
                transfer = transfer_create(
                    source_id=data["source"].pk,
                    target_id=data["target"].pk,
                    amount=data["amount"],
                    idempotency_key=data["idempotency_key"],
                    memo=data["memo"],
                    actor=request.user,
                )
        except IdempotencyConflict:
            # The same key sent at once with other values (two tabs): the other one won. The key
            # means nothing to a person, so it is not shown.
            conflict = True
            form.add_error(None, IDEMPOTENCY_CONFLICT_MESSAGE)
        except DomainError as exc:
            form.add_error(None, str(exc))
        except ServiceTransactionFailed:
            # The accounts stayed locked by others through every attempt: nothing moved, and the
            # same form (same key) may be sent again.
            form.add_error(None, BUSY_MESSAGE)
            status = 409
        else:
            transfer.source, transfer.target = data["source"], data["target"]
            messages.success(
                request,
                f"{_sent_summary(transfer)}, in one transaction of {stats.count} queries.",
            )
            return redirect("accounts:transfer_list")
    context = {"form": form, "conflict": conflict}
    return render(request, "accounts/transfer_form.html", context, status=status)


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
        status = 400
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
            except ServiceTransactionFailed:
                form.add_error(None, BUSY_MESSAGE)
                status = 409
            else:
                messages.success(request, f"Account “{form.cleaned_data['name']}” saved.")
                return redirect("accounts:overview")
        return render(
            request,
            "accounts/account_form.html",
            {"form": form, "account": account},
            status=status,
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
