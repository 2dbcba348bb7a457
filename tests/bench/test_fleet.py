"""The fleet benchmark in small: real `brokeforge serve`, bench hosts on
loopback, installs asked for at once through the API.

No timing is asserted (benchmarks print figures); what is asserted is what
a person would see: every record `active`, and that one worker process ran
several operations at the same time.
"""

from __future__ import annotations

import itertools

import pytest

from bench import fleet

HOSTS = 4


@pytest.mark.timeout(120)
def test_it_runs_several_installs_at_once_in_one_worker() -> None:
    result = fleet.measure(HOSTS, workers=1, concurrency=HOSTS, install_seconds=1)

    assert result.statuses == {"active": HOSTS}, result.errors
    # One worker process: operations whose runs overlap ran side by side in it.
    spans = sorted(result.spans)
    assert len(spans) == HOSTS
    overlapping = [(a, b) for a, b in itertools.pairwise(spans) if b[0] < a[1]]
    assert overlapping, f"the operations ran one after another: {spans}"
    assert result.most_at_once > 1
