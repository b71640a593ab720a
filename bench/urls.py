from django.db import connection
from django.http import HttpResponse
from django.urls import include, path


def one_query(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return HttpResponse("ok")


urlpatterns = [path("bench/one-query", one_query), path("", include("config.urls"))]
