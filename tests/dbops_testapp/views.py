"""Pages for the toolkit's tests: a list a person reads (from the replica when the router says
so), an optimistic edit and a keyed take of stock that write, and an async detail page. Plain
text, no templates: the tests look at what the toolkit does around them."""

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import F
from django.http import Http404, HttpResponse, HttpResponseRedirect

from .models import Child, Parent

LIST_URL = "/parents/"


@login_required
def parent_list(request):
    names = [parent.name for parent in Parent.objects.filter(owner=request.user).order_by("pk")]
    return HttpResponse("\n".join(names), content_type="text/plain")


@login_required
def parent_edit(request, pk: int):
    """Rename under the version the form was read at: zero rows updated is a 409."""
    if request.method != "POST":
        return HttpResponse(status=405)
    updated = Parent.objects.filter(
        pk=pk, owner=request.user, version=int(request.POST["version"])
    ).update(name=request.POST["name"], version=F("version") + 1)
    if not updated:
        return HttpResponse("changed meanwhile", status=409)
    return HttpResponseRedirect(LIST_URL)


@login_required
def parent_take(request, pk: int):
    """Take ``quantity`` from a parent's stock, once per ``key``, in one durable transaction;
    the parent is read first (on the replica, when this request reads there)."""
    if request.method != "POST":
        return HttpResponse(status=405)
    parent = Parent.objects.filter(pk=pk, owner=request.user).first()
    if parent is None:
        raise Http404
    quantity = int(request.POST["quantity"])
    with transaction.atomic(durable=True):
        _, created = Child.objects.get_or_create(
            key=request.POST["key"], defaults={"parent": parent, "quantity": quantity}
        )
        if created:
            Parent.objects.filter(pk=parent.pk).update(stock=F("stock") - quantity)
    return HttpResponseRedirect(LIST_URL)


async def parent_detail(request, pk: int):
    parent = await Parent.objects.filter(pk=pk).afirst()
    if parent is None:
        raise Http404
    return HttpResponse(parent.name, content_type="text/plain")
