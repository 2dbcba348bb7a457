from __future__ import annotations

from django.urls import include, path

from brokeforge.api.api import api

urlpatterns = [
    path("api/v1/", api.urls),
    path("", include("brokeforge.web.urls")),
]
