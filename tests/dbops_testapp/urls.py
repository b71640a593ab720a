"""The URLs the toolkit's tests request (tests/dbops/conftest.py makes this the URLconf of every
test there): the toolkit's health endpoints, the admin (its backfill pages) and the test app's
pages. Nothing of the project."""

from django.contrib import admin
from django.urls import include, path

from . import views

urlpatterns = [
    path("health/", include("dbops.urls")),
    path("admin/", admin.site.urls),
    path("parents/", views.parent_list, name="parent_list"),
    path("parents/<int:pk>/", views.parent_detail, name="parent_detail"),
    path("parents/<int:pk>/edit/", views.parent_edit, name="parent_edit"),
    path("parents/<int:pk>/take/", views.parent_take, name="parent_take"),
]
