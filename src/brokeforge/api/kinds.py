"""/api/v1/kinds: every package kind and the options of its actions."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router

from brokeforge.api.common import ERRORS
from brokeforge.api.schemas import KindOut
from brokeforge.packages.base import Field, PackageKind
from brokeforge.packages.registry import KINDS

router = Router(tags=["kinds"])


@router.get("", response={200: list[KindOut], **ERRORS}, summary="Package kinds")
def list_kinds(request: HttpRequest) -> list[dict[str, Any]]:
    return [kind_dict(kind) for kind in KINDS.values()]


def kind_dict(kind: PackageKind) -> dict[str, Any]:
    return {
        "name": kind.name,
        "label": kind.label,
        "family": kind.family,
        "many": kind.many,
        "parent": kind.parent,
        "verbs": {a: kind.verb(a) for a in ("install", "update", "remove")},
        "fields": [_field(f) for f in kind.fields],
        "update_fields": [_field(f) for f in kind.update_fields],
        "remove_fields": [_field(f) for f in kind.remove_fields],
    }


def _field(field: Field) -> dict[str, Any]:
    return {
        "name": field.name,
        "label": field.label,
        "help": field.help,
        "required": field.required,
        "choices": [list(c) for c in field.choices],
        "secret": field.secret,
        "boolean": field.boolean,
        "default": field.default,
    }
