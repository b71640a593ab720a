from uuid import uuid4

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest, PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from dbops.pagination import cursor_parse
from orders.exceptions import OrdersError, UnknownRegion
from orders.forms import OrderForm, OrderLineFormSet
from orders.models import Region
from orders.selectors import (
    ORDER_PAGE_SIZE,
    customer_get,
    customer_of_user,
    order_get,
    order_list,
    report_daily_sales,
    report_top_customers,
)
from orders.services import order_place


def customer_scope(request) -> int | None:
    """None for staff (every customer); the customer id of a customer login; 404 for anyone else."""
    if request.user.is_staff:
        return None
    customer = customer_of_user(user=request.user)
    if customer is None:
        raise Http404("No customer profile.")
    return customer.pk


@login_required
def order_list_view(request):
    after = cursor_parse(request.GET.get("after"))
    orders = order_list(customer_id=customer_scope(request), after=after)
    next_after = orders[-1].pk if len(orders) == ORDER_PAGE_SIZE else None
    return render(request, "orders/order_list.html", {"orders": orders, "next_after": next_after})


@login_required
def order_detail(request, order_id: int):
    order = order_get(order_id=order_id, customer_id=customer_scope(request))
    if order is None:
        raise Http404("No such order.")
    return render(request, "orders/order_detail.html", {"order": order})


@login_required
def customer_detail(request, customer_id: int):
    scope = customer_scope(request)
    if scope is not None and scope != customer_id:
        raise Http404("No such customer.")
    customer = customer_get(customer_id=customer_id)
    if customer is None:
        raise Http404("No such customer.")
    orders = order_list(customer_id=customer.pk, limit=20)
    return render(request, "orders/customer_detail.html", {"customer": customer, "orders": orders})


@login_required
@require_http_methods(["GET", "POST"])
def order_create(request):
    customer = customer_of_user(user=request.user)
    if customer is None:
        raise PermissionDenied("Only a login with a customer profile can place orders.")
    if request.method == "POST":
        form = OrderForm(request.POST)
        lines = OrderLineFormSet(request.POST, prefix="lines")
        if form.is_valid() and lines.is_valid():
            try:
                order = order_place(
                    customer_id=customer.pk,
                    lines=lines.lines(),
                    payment_methods=form.cleaned_data["payment_methods"],
                    idempotency_key=form.cleaned_data["idempotency_key"],
                )
            except OrdersError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Order #{order.pk} placed and paid: {order.total}.")
                return redirect("orders:order_detail", order_id=order.pk)
        return render(request, "orders/order_form.html", {"form": form, "lines": lines}, status=400)
    form = OrderForm(initial={"idempotency_key": uuid4().hex})
    return render(
        request, "orders/order_form.html", {"form": form, "lines": OrderLineFormSet(prefix="lines")}
    )


@login_required
def report_top_customers_view(request):
    if not request.user.is_staff:
        raise PermissionDenied("Reports cover every customer: staff only.")
    region = request.GET.get("region") or None
    try:
        rows = report_top_customers(region=region)
    except UnknownRegion as exc:
        raise BadRequest(str(exc)) from exc
    return render(
        request,
        "orders/report_top_customers.html",
        {
            "rows": rows,
            "region": region,
            "regions": Region.choices,
            "daily": report_daily_sales(days=14),
        },
    )
