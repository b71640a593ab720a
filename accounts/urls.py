from django.urls import path

from accounts import views

app_name = "accounts"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("transfers/new/", views.transfer_create_view, name="transfer_create"),
    path("transfers/", views.transfer_list_view, name="transfer_list"),
    path("<int:account_id>/edit/", views.account_edit, name="account_edit"),
    path("<int:account_id>/statement/", views.account_statement, name="account_statement"),
]
