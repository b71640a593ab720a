from functools import wraps
from uuid import uuid4

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest, PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from core.exceptions import BUSY_MESSAGE
from core.forms import form_key, form_key_redirect
from core.pagination import cursor_parse, keyset_page
from dbops.instrumentation import track_queries
from dbops.transactions import ServiceTransactionFailed
from orders.exceptions import (
    DomainError,
    IdempotencyConflict,
    ProductNotFound,
    StaleVersion,
    UnknownRegion,
)
from orders.forms import OrderForm, OrderLineFormSet, RestockForm, order_lines_edit
from orders.models import Region
from orders.money import order_money
from orders.payments import RecordingGateway
from orders.selectors import (
    ORDER_PAGE_SIZE,
    TOP_CUSTOMERS_LIMIT,
    aproduct_get,
    aproduct_page,
    customer_get,
    customer_of_user,
    order_by_key,
    order_get,
    order_list,
    report_daily_sales,
    report_top_customers,
)
from orders.services import order_place, product_restock


def customer_or_staff_required(view):
    """Staff see every customer's orders (``scope`` None), a customer login only its own (``scope``
    its customer id). Anyone else gets a page that says why there is nothing, not a bare 404."""

    @wraps(view)
    @login_required
    def wrapper(request, *args, **kwargs):
        if request.user.is_staff:
            return view(request, *args, scope=None, **kwargs)
        customer = customer_of_user(user=request.user)
        if customer is None:
            return render(request, "orders/no_profile.html")
        return view(request, *args, scope=customer.pk, **kwargs)

    return wrapper


def customer_scope(request) -> int | None:
    """None for staff (every customer); the customer id of a customer login; 404 for anyone else."""
    if request.user.is_staff:
        return None
    customer = customer_of_user(user=request.user)
    if customer is None:
        raise Http404("No customer profile.")
    return customer.pk


@customer_or_staff_required
def order_list_view(request, *, scope):
    page = keyset_page(
        lambda **cursor: order_list(customer_id=scope, **cursor),
        after=cursor_parse(request.GET.get("after")),
        before=cursor_parse(request.GET.get("before")),
        size=ORDER_PAGE_SIZE,
    )
    return render(
        request, "orders/order_list.html", {"orders": page.items, "page": page, "scope": scope}
    )


@customer_or_staff_required
def order_detail(request, order_id: int, *, scope):
    order = order_get(order_id=order_id, customer_id=scope)
    if order is None:
        raise Http404("No such order.")
    return render(request, "orders/order_detail.html", {"order": order})


@customer_or_staff_required
def customer_detail(request, customer_id: int, *, scope):
    if scope is not None and scope != customer_id:
        raise Http404("No such customer.")
    customer = customer_get(customer_id=customer_id)
    if customer is None:
        raise Http404("No such customer.")
    orders = order_list(customer_id=customer.pk, limit=20)
    return render(request, "orders/customer_detail.html", {"customer": customer, "orders": orders})


ORDER_IDEMPOTENCY_CONFLICT_MESSAGE = (
    "This form was already used for another order, so nothing was ordered. "
    "Start a new order to place this one."
)


@login_required
@require_http_methods(["GET", "POST"])
def order_create(request):
    """One rendering of the form, one key (in the address and the form), one order at most:
    Back and Place order, a double click or a retry all replay that key (``core.forms.form_key``)."""
    customer = customer_of_user(user=request.user)
    if customer is None:
        return render(request, "orders/no_profile.html")
    if request.method == "POST":
        edited = order_lines_edit(request.POST)
        if edited is not None:
            # "Add a line" / "Remove" without JavaScript: the same form back, one line more or less.
            form = OrderForm(
                initial={
                    "payment_methods": request.POST.getlist("payment_methods"),
                    "decline": request.POST.getlist("decline"),
                    "idempotency_key": request.POST.get("idempotency_key") or uuid4().hex,
                }
            )
            return render(request, "orders/order_form.html", {"form": form, "lines": edited})
        return _order_submit(request, customer)
    key = form_key(request)
    if key is None:
        return form_key_redirect(request)
    placed = order_by_key(customer_id=customer.pk, key=key)
    # Back after placing it: the form as it was sent, saying so; Place order replays the key.
    rows = (
        [{"product": i.product_id, "quantity": i.quantity} for i in placed.items.all()]
        if placed
        else None
    )
    form = OrderForm(initial={"idempotency_key": key})
    lines = OrderLineFormSet(prefix="lines", initial=rows)
    return render(
        request, "orders/order_form.html", {"form": form, "lines": lines, "placed": placed}
    )


def _order_submit(request, customer):
    placed = order_by_key(customer_id=customer.pk, key=request.POST.get("idempotency_key", ""))
    if placed is not None:
        # This rendering of the form was sent already (Back and Place order, a second tab): show
        # the order it placed, and order nothing more, even if a line was changed since.
        messages.info(
            request,
            f"Order #{placed.pk} ({order_money(placed.total)}) was placed from this form before. "
            "Nothing was ordered again.",
        )
        return redirect("orders:order_detail", order_id=placed.pk)
    form = OrderForm(request.POST)
    lines = OrderLineFormSet(request.POST, prefix="lines")
    conflict = False
    status = 400
    if form.is_valid() and lines.is_valid():
        gateway = RecordingGateway(decline=form.cleaned_data.get("decline", ()))
        try:
            with track_queries() as stats:
                order = order_place(
                    customer_id=customer.pk,
                    lines=lines.lines(),
                    payment_methods=form.cleaned_data["payment_methods"],
                    idempotency_key=form.cleaned_data["idempotency_key"],
                    gateway=gateway,
                )
        except IdempotencyConflict:
            # The same key sent at once with other lines (two tabs): the other one won. The key
            # means nothing to a person, so it is not shown.
            conflict = True
            form.add_error(None, ORDER_IDEMPOTENCY_CONFLICT_MESSAGE)
        except DomainError as exc:
            form.add_error(None, str(exc))
        except ServiceTransactionFailed:
            # Nothing was ordered; the same form (same key) may be sent again.
            form.add_error(None, BUSY_MESSAGE)
            status = 409
        else:
            messages.success(request, order_placed_message(order, gateway, stats.count))
            return redirect("orders:order_detail", order_id=order.pk)
    context = {"form": form, "lines": lines, "conflict": conflict}
    return render(request, "orders/order_form.html", context, status=status)


def order_placed_message(order, gateway: RecordingGateway, queries: int) -> str:
    """ "Order #7 placed: card declined (declined by the simulator), 1,234.50 EUR paid with
    wallet; one transaction of 14 queries." """
    declined = "".join(f"{method} declined ({reason}), " for method, reason in gateway.declined)
    paid_with = f" with {gateway.captured[-1]}" if gateway.captured else ""
    return (
        f"Order #{order.pk} placed: {declined}{order_money(order.total)} paid{paid_with}; "
        f"one transaction of {queries} queries."
    )


@login_required
def report_top_customers_view(request):
    if not request.user.is_staff:
        raise PermissionDenied("Reports cover every customer: staff only.")
    region = request.GET.get("region") or None
    try:
        rows = report_top_customers(region=region, limit=TOP_CUSTOMERS_LIMIT)
        daily = report_daily_sales(days=14, region=region)
    except UnknownRegion as exc:
        raise BadRequest(str(exc)) from exc
    return render(
        request,
        "orders/report_top_customers.html",
        {
            "rows": rows,
            "region": region,
            "region_label": Region(region).label if region else "",
            "regions": Region.choices,
            "daily": daily,
            "limit": TOP_CUSTOMERS_LIMIT,
        },
    )


# Async views: the catalog and a product's page. Each ORM call awaits a query that Django still
# runs in a worker thread; the event loop serves other requests meanwhile. Writes go through the
# sync services (see product_restock_view).


async def _request_user(request):
    """The login, resolved with the async API and handed to the templates: the lazy
    ``request.user`` would query the database synchronously while the template renders, which
    Django refuses inside the event loop (``SynchronousOnlyOperation``)."""
    request.user = await request.auser()
    return request.user


@login_required
async def product_list_view(request):
    after = cursor_parse(request.GET.get("after"))
    before = cursor_parse(request.GET.get("before"))
    await _request_user(request)
    page, total = await aproduct_page(after=after, before=before)
    return render(
        request,
        "orders/product_list.html",
        {"products": page.items, "page": page, "total": total},
    )


@login_required
async def product_detail(request, product_id: int):
    user = await _request_user(request)
    product = await aproduct_get(product_id=product_id)
    if product is None:
        raise Http404("No such product.")
    form = RestockForm(initial={"version": product.version}) if user.is_staff else None
    return render(request, "orders/product_detail.html", {"product": product, "form": form})


@login_required
@require_POST
async def product_restock_view(request, product_id: int):
    user = await _request_user(request)
    if not user.is_staff:
        raise PermissionDenied("Only staff restock products.")
    form = RestockForm(request.POST)
    status, conflict = 400, None
    if form.is_valid():
        try:
            # The write stays in the sync service, transaction and all: a transaction belongs to
            # one connection in one thread, so atomic() cannot run in the event loop. With
            # thread_sensitive=True the whole service runs in the request's one sync thread.
            product = await sync_to_async(product_restock, thread_sensitive=True)(
                product_id=product_id,
                quantity=form.cleaned_data["quantity"],
                expected_version=form.cleaned_data["version"],
            )
        except ProductNotFound as exc:
            raise Http404("No such product.") from exc
        except StaleVersion as exc:
            status, conflict = 409, str(exc)
            form = RestockForm(initial={"version": exc.current.version})
        except DomainError as exc:
            form.add_error(None, str(exc))
        except ServiceTransactionFailed:
            status = 409
            form.add_error(None, BUSY_MESSAGE)
        else:
            added = form.cleaned_data["quantity"]
            messages.success(request, f"{product.sku}: {added} added, {product.stock} in stock.")
            return redirect("orders:product_detail", product_id=product_id)
    product = await aproduct_get(product_id=product_id)
    if product is None:
        raise Http404("No such product.")
    context = {"product": product, "form": form, "conflict": conflict}
    return render(request, "orders/product_detail.html", context, status=status)
