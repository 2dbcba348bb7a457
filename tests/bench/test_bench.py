"""The benchmark runner (bench/__main__.py) and a smoke run of benchmark 1's
BrokeForge side. Benchmarks print figures; nothing here asserts a timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import bench.__main__ as runner
from bench.common import Goal, Section

REPO = Path(__file__).resolve().parents[2]


def section(title: str, met: bool) -> Section:
    return Section(
        title=title,
        header=["system", "figure"],
        rows=[["BrokeForge", "1 ms"], ["a|b", "2 ms"]],
        goals=[Goal("fast enough", met, "worst 2 ms")],
        notes=["measured somehow"],
    )


def test_a_benchmark_that_cannot_be_imported_is_a_failed_section() -> None:
    sections = runner.run_child("no_such_benchmark", quick=True)

    assert [s.title for s in sections] == ["no_such_benchmark: FAILED"]
    assert "No module named 'bench.no_such_benchmark'" in sections[0].rows[0][1]
    assert runner._is_failure(sections[0])


def test_an_unknown_name_is_refused_before_anything_runs(capsys) -> None:
    with pytest.raises(SystemExit) as exit:
        runner.main(["--quick", "nonsense"])

    assert exit.value.code == 2
    assert "unknown benchmark(s): nonsense" in capsys.readouterr().err


def test_performance_md_keeps_the_sections_of_benchmarks_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "performance.md"
    monkeypatch.setattr(runner, "PERFORMANCE", target)

    runner.write_performance([("worker_loss", [section("1. Loss", True)], 3.0)])
    runner.write_performance([("timeout_overrun", [section("2. Late", False)], 4.0)])
    text = target.read_text()

    assert "## 1. Loss" in text and "## 2. Late" in text
    assert text.index("## 1. Loss") < text.index("## 2. Late")
    assert "- ✓ fast enough: worst 2 ms" in text
    assert "- ✗ fast enough: worst 2 ms" in text
    assert "| a\\|b | 2 ms |" in text
    assert "| Celery |" in text and "| redis-server (Debian) |" in text


def test_the_terminal_table_lines_up_and_marks_goals() -> None:
    text = runner.render_text(section("1. Loss", False))

    lines = text.splitlines()
    assert lines[2].index("figure") == lines[4].index("1 ms")
    assert "✗ fast enough: worst 2 ms" in text


@pytest.mark.debian_host
@pytest.mark.timeout(300)
def test_a_killed_worker_s_job_is_reported_failed_and_not_run_again() -> None:
    """Benchmark 1's BrokeForge side, once: real serve, real SSH host."""
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, bench.worker_loss as w; print(json.dumps(w.smoke()))",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])

    assert result["reported"] == "failed"
    assert "killed by signal 9 (SIGKILL)" in result["reason"]
    assert result["starts"] == 1 and not result["reran"]
    assert not result["left_running"]
