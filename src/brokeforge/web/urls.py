from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path


def placeholder(request: HttpRequest) -> HttpResponse:
    return HttpResponse("BrokeForge")


urlpatterns = [
    path("", placeholder, name="server-list"),
    path("setup/", placeholder, name="first-run"),
    path("login/", placeholder, name="login"),
]
