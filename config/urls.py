from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from config import demos, views
from core.login import AdminLoginForm, LoginForm

admin.site.login_form = AdminLoginForm

patterns_urls = (
    [
        path("", views.patterns_index, name="index"),
        path("n-plus-one/", demos.n_plus_one, name="n_plus_one"),
        path("edit-conflict/", demos.edit_conflict, name="conflict"),
        path("batch/", demos.batch, name="batch"),
    ],
    "patterns",
)

urlpatterns = [
    path("", views.home, name="home"),
    path("favicon.ico", views.favicon),
    path("patterns/", include(patterns_urls)),
    path("login/", auth_views.LoginView.as_view(authentication_form=LoginForm), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("health/", include("dbops.urls")),
    path("accounts/", include("accounts.urls")),
    path("orders/", include("orders.urls")),
    path("admin/", admin.site.urls),
]

admin.site.site_header = "django-pg-patterns admin"
admin.site.site_title = "django-pg-patterns"

handler500 = "config.views.server_error"

if "debug_toolbar" in settings.INSTALLED_APPS:
    from debug_toolbar.toolbar import debug_toolbar_urls

    urlpatterns += debug_toolbar_urls()
