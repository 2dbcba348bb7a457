from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse


class FirstRunMiddleware:
    """Send every request to the first-run page until an account exists."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self._has_users = False

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not self._has_users:
            self._has_users = get_user_model().objects.exists()
            setup_url = reverse("first-run")
            if not self._has_users and request.path != setup_url:
                return redirect(setup_url)
        return self.get_response(request)
