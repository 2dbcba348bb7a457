"""The live update benchmark (bench/live_update.py) in quick mode: every
status change it commits shows up in the open page. No timing is asserted."""

from __future__ import annotations

import pytest

from bench import live_update

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def test_every_committed_change_reaches_the_open_page() -> None:
    result = live_update.measure_in_subprocess(4, postgres=False)

    assert result["missed"] == 0
    assert len(result["latencies"]) == 4
    # The page saw each change after its commit, on the same clock.
    assert all(latency > 0 for latency in result["latencies"])
    # The server-sent events themselves are timed too, a secondary figure:
    # the page's listener has missed one of four in a run while the row
    # still showed every change, so not every change needs one.
    assert result["arrivals"]
    assert all(arrival > 0 for arrival in result["arrivals"])


def test_it_reports_the_figures_and_the_goal() -> None:
    result = {"latencies": [0.08, 0.1, 0.5], "arrivals": [0.02], "missed": 1}

    section = live_update.section(
        {"SQLite": result, "PostgreSQL": {"skipped": "no PostgreSQL server"}}
    )

    assert section.rows[0][:2] == ["SQLite", "3 of 4"]
    assert section.rows[1][:2] == ["PostgreSQL", "skipped"]
    assert [(goal.text, goal.met) for goal in section.goals] == [
        ("p95 under 300 ms (SQLite)", False)
    ]
