"""Forms of the web pages: they parse input; the services validate and act."""

from __future__ import annotations

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError


class ServerForm(forms.Form):
    """The "Add server" form; `brokeforge.servers.service.add_server` validates."""

    name = forms.CharField(
        max_length=63,
        help_text="Lowercase letters, digits and dashes, e.g. web-1.",
    )
    host = forms.CharField(max_length=253, help_text="An IP address or a DNS name.")
    port = forms.IntegerField(initial=22)
    user = forms.CharField(max_length=32, initial="root")
    private_key = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        help_text="Optional: paste an unencrypted private key. "
        "Leave empty to generate an ed25519 key.",
    )

    def clean_private_key(self) -> str | None:
        # Browsers send textarea lines with CRLF; keys are plain LF text.
        text: str = self.cleaned_data["private_key"].replace("\r\n", "\n")
        return text.strip() + "\n" if text.strip() else None

    def add_service_errors(self, error: ValidationError) -> None:
        """Show a service's `ValidationError` next to the fields it names."""
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
            return
        for field, errors in error.error_dict.items():
            target = field if field in self.fields else None
            if field == NON_FIELD_ERRORS:
                target = None
            for item in errors:
                self.add_error(target, item)


class TokenForm(forms.Form):
    """The "Create token" form; `brokeforge.accounts.tokens` validates."""

    name = forms.CharField(max_length=64, help_text="What uses it, e.g. deploy-ci.")
    read_only = forms.BooleanField(
        required=False, help_text="Read-only tokens can look but not change."
    )

    def add_service_errors(self, error: ValidationError) -> None:
        for field, errors in error.message_dict.items():
            for item in errors:
                self.add_error(field if field in self.fields else None, item)
