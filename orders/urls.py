from django.urls import path

from config.views import home

app_name = "orders"
urlpatterns = [
    path("", home, name="order_list"),
    path("new/", home, name="order_create"),
    path("reports/top-customers/", home, name="report_top_customers"),
]
