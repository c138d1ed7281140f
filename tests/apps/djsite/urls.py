from django.urls import path

from djsite import views

urlpatterns = [
    path("api/items/<int:item>", views.item),
    path("form", views.form),
    path("stream", views.stream),
]
