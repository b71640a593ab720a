from django.urls import path

from config.views import home

app_name = "accounts"
urlpatterns = [
    path("", home, name="overview"),
    path("transfers/new/", home, name="transfer_create"),
    path("transfers/", home, name="transfer_list"),
]
