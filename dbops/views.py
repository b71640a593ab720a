from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from dbops.health import readiness


@never_cache
@require_GET
def live(request):
    """The process answers; the database is not touched."""
    return HttpResponse("ok\n", content_type="text/plain")


@never_cache
@require_GET
def ready(request):
    """200 when the database answers and no migration is pending; 503 with the reason when not."""
    ok, report = readiness()
    return JsonResponse(report, status=200 if ok else 503)
