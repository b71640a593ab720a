from uuid import uuid4

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from accounts.exceptions import AccountsError, StaleVersion
from accounts.forms import AccountEditForm, TransferForm
from accounts.selectors import TRANSFER_PAGE_SIZE, account_get, account_list, transfer_list
from accounts.services import account_update, transfer_create
from dbops.pagination import cursor_parse


@login_required
def overview(request):
    return render(
        request,
        "accounts/overview.html",
        {
            "accounts": account_list(owner=request.user),
            "transfers": transfer_list(owner=request.user, limit=10),
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
            except AccountsError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Transfer #{transfer.pk}: {transfer.amount} sent.")
                return redirect("accounts:transfer_list")
        return render(request, "accounts/transfer_form.html", {"form": form}, status=400)
    form = TransferForm(owner=request.user, initial={"idempotency_key": uuid4().hex})
    return render(request, "accounts/transfer_form.html", {"form": form})


@login_required
def transfer_list_view(request):
    after = cursor_parse(request.GET.get("after"))
    page = transfer_list(owner=request.user, after=after)
    next_after = page[-1].pk if len(page) == TRANSFER_PAGE_SIZE else None
    return render(
        request, "accounts/transfer_list.html", {"transfers": page, "next_after": next_after}
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
            except AccountsError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Account “{form.cleaned_data['name']}” saved.")
                return redirect("accounts:overview")
        return render(
            request, "accounts/account_form.html", {"form": form, "account": account}, status=400
        )
    form = AccountEditForm(initial={"name": account.name, "version": account.version})
    return render(request, "accounts/account_form.html", {"form": form, "account": account})
