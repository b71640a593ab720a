from django.urls import re_path

from dbops import views

app_name = "health"
# Probes are configured by hand: with or without the trailing slash, both answer (no redirect).
urlpatterns = [
    re_path(r"^$", views.status, name="status"),
    re_path(r"^live/?$", views.live, name="live"),
    re_path(r"^ready/?$", views.ready, name="ready"),
    re_path(r"^metrics/?$", views.metrics_view, name="metrics"),
]
