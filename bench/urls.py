import asyncio
import time

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import include, path

from core.pagination import cursor_parse, keyset_page_of
from orders.models import Product
from orders.selectors import PRODUCT_PAGE_SIZE, product_list

# A call to a slow upstream service (a payment provider, a search API), simulated by sleeping.
UPSTREAM_SECONDS = 0.5


def one_query(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return HttpResponse("ok")


def upstream_sync(request):
    time.sleep(UPSTREAM_SECONDS)  # holds the worker thread while it waits
    return HttpResponse("ok")


async def upstream_async(request):
    await asyncio.sleep(UPSTREAM_SECONDS)  # the event loop serves other requests meanwhile
    return HttpResponse("ok")


@login_required
def product_list_sync(request):
    """``orders.views.product_list_view`` written as a sync view, for WSGI: same selector,
    same template, same queries."""
    after = cursor_parse(request.GET.get("after"))
    rows = list(product_list(after=after, limit=PRODUCT_PAGE_SIZE + 1))
    page = keyset_page_of(rows, after=after, before=None, size=PRODUCT_PAGE_SIZE)
    context = {"products": page.items, "page": page, "total": Product.objects.count()}
    return render(request, "orders/product_list.html", context)


urlpatterns = [
    path("bench/one-query", one_query),
    path("bench/upstream-sync", upstream_sync),
    path("bench/upstream-async", upstream_async),
    path("bench/products-sync/", product_list_sync),
    path("", include("config.urls")),
]
