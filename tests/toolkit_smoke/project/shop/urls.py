from django.urls import path
from shop import views

urlpatterns = [
    path("items/", views.items),
    path("items/<int:pk>/", views.item),
    path("unavailable/", views.unavailable),
]
