"""`{% badge status %}`: a status as words and a symbol, not colour alone."""

from __future__ import annotations

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from brokeforge.lifecycle.models import Operation
from brokeforge.web.display import STATUS_SYMBOLS, duration_text

register = template.Library()


@register.simple_tag
def badge(status: str) -> SafeString:
    return format_html(
        '<span class="badge badge-{}"><span aria-hidden="true">{} </span>{}</span>',
        status,
        STATUS_SYMBOLS.get(status, "•"),
        status,
    )


@register.filter
def took(operation: Operation) -> str:
    """How long an operation ran ("12 s", "3 min 5 s"), "" if it did not end."""
    if operation.started_at is None or operation.finished_at is None:
        return ""
    return duration_text(operation.finished_at - operation.started_at)
