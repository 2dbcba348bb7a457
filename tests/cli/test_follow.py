"""`--wait` follows the whole output stream, even once its head was dropped."""

from __future__ import annotations

import pytest

from brokeforge import cli
from brokeforge.lifecycle.models import Operation, OperationState
from brokeforge.packages.service import request_action

pytestmark = pytest.mark.django_db


def test_it_says_what_it_skipped_and_prints_the_kept_tail(make_server, capsys):
    operation = request_action(make_server("web-1"), "redis", "install")
    Operation.objects.filter(pk=operation.pk).update(
        state=OperationState.SUCCEEDED, output="tail of it\n", output_dropped=300000
    )

    assert cli._follow(operation.pk) == 0

    out = capsys.readouterr().out
    assert out == (
        "[... 300000 characters of output skipped ...]\n"
        "tail of it\n"
        f"operation {operation.pk} succeeded\n"
    )


def test_it_exits_non_zero_with_the_reason_of_a_failure(make_server, capsys):
    operation = request_action(make_server("web-1"), "redis", "install")
    Operation.objects.filter(pk=operation.pk).update(
        state=OperationState.FAILED, error_message="timed out after 5 s"
    )

    assert cli._follow(operation.pk) == 1

    assert capsys.readouterr().err == "error: timed out after 5 s\n"
