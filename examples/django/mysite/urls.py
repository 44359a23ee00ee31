from __future__ import annotations

from django.urls import path
from signups import views

urlpatterns = [
    path("signups", views.sign_up),
    path("signups/async", views.sign_up_async),
    path("signups/<int:signup_id>", views.signup_detail),
]
