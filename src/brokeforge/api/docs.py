"""The API's docs page: the OpenAPI schema rendered on the server, no scripts.

Swagger UI would need static files served or a CDN; this page needs neither
and works offline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from ninja.openapi.docs import DocsBase

if TYPE_CHECKING:
    from ninja import NinjaAPI

METHODS = ("get", "post", "put", "patch", "delete")


class PlainDocs(DocsBase):
    def render_page(
        self, request: HttpRequest, api: NinjaAPI, **kwargs: Any
    ) -> HttpResponse:
        schema = api.get_openapi_schema(path_params=kwargs)
        endpoints = []
        for path, item in schema["paths"].items():
            for method in METHODS:
                if method in item:
                    spec = item[method]
                    endpoints.append(
                        {
                            "method": method.upper(),
                            "path": path,
                            "summary": spec.get("summary", ""),
                            "description": spec.get("description", ""),
                            "responses": sorted(spec.get("responses", {})),
                        }
                    )
        context = {
            "api": api,
            "endpoints": endpoints,
            "schema_url": self.get_openapi_url(api, kwargs),
        }
        return render(request, "api/docs.html", context)
