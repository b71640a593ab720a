from django.urls import path

from orders import views

app_name = "orders"
urlpatterns = [
    path("", views.order_list_view, name="order_list"),
    path("new/", views.order_create, name="order_create"),
    path("<int:order_id>/", views.order_detail, name="order_detail"),
    path("customers/<int:customer_id>/", views.customer_detail, name="customer_detail"),
    path("reports/top-customers/", views.report_top_customers_view, name="report_top_customers"),
    path("products/", views.product_list_view, name="product_list"),
    path("products/<int:product_id>/", views.product_detail, name="product_detail"),
    path("products/<int:product_id>/restock/", views.product_restock_view, name="product_restock"),
]
