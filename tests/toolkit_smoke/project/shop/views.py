from django.db import OperationalError
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from shop.models import Item


@csrf_exempt
def items(request):
    if request.method == "POST":
        item = Item.objects.create(name=request.POST["name"], code=request.POST["code"])
        return JsonResponse({"id": item.pk}, status=201)
    return JsonResponse({"count": Item.objects.count()})


def item(request, pk):
    found = Item.objects.filter(pk=pk).values("id", "name").first()
    if found is None:
        raise Http404("no such item")
    return JsonResponse(found)


def unavailable(request):
    raise OperationalError("the smoke's stand-in for a database outage")
