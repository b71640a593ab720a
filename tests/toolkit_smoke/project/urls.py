from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health/", include("dbops.urls")),
    path("shop/", include("shop.urls")),
]
