"""`python -m bench [--quick] [NAME...]`: run the benchmarks, print their
tables, write docs/performance.md (bench/run installs what they need first).

Each benchmark module runs in a child process of its own: one that fails,
hangs past its limit or crashes is reported as a failed section and the
others still run, and each sets up Django (or not) as it needs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import Goal, Section, debian_version, machine, version

BENCHMARKS = [
    "worker_loss",
    "timeout_overrun",
    "dispatch",
    "live_update",
    "ssh_reuse",
    "fleet",
]
REPO = Path(__file__).resolve().parents[1]
PERFORMANCE = REPO / "docs" / "performance.md"
#: A benchmark still running after this long is stopped and reported failed.
LIMIT_SECONDS = {"quick": 900, "full": 3600}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short run each")
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave docs/ alone"
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, stopping the running benchmark's child.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.one:
        return run_one(args.one, args.quick, Path(args.out))

    names = args.names or BENCHMARKS
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    results: list[tuple[str, list[Section], float]] = []
    for name in names:
        began = time.monotonic()
        print(f"== {name}{' (quick)' if args.quick else ''}", flush=True)
        sections = run_child(name, args.quick)
        elapsed = time.monotonic() - began
        for section in sections:
            print(render_text(section), flush=True)
        results.append((name, sections, elapsed))
    failed = [n for n, sections, _ in results if any(_is_failure(s) for s in sections)]
    if args.quick or args.no_write:
        print("(docs/performance.md not written: quick runs and --no-write print only)")
    else:
        write_performance(results)
        print(f"wrote {PERFORMANCE.relative_to(REPO)}")
    if failed:
        print(f"benchmarks that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def run_one(name: str, quick: bool, out: Path) -> int:
    """In the child: import and run one benchmark, write its sections as JSON."""

    def stop(signum: int, frame: object) -> None:
        # Unwind, so every context manager stops what it started (the SSH
        # host's mounts, redis-server, the systems' processes).
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        module = importlib.import_module(f"bench.{name}")
        result = module.run(quick)
        sections = result if isinstance(result, list) else [result]
        payload = [dataclasses.asdict(s) for s in sections]
        code = 0
    except Exception:
        payload = [dataclasses.asdict(failure(name, traceback.format_exc()))]
        code = 1
    out.write_text(json.dumps(payload))
    return code


def run_child(name: str, quick: bool) -> list[Section]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, "-m", "bench", "--one", name, "--out", out.name]
        if quick:
            command.append("--quick")
        limit = LIMIT_SECONDS["quick" if quick else "full"]
        child = subprocess.Popen(command, cwd=REPO)
        try:
            child.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            stop_child(child)
            return [failure(name, f"stopped after {limit} s without finishing")]
        except BaseException:
            stop_child(child)  # Ctrl-C or SIGTERM: let it clean up, then stop
            raise
        text = Path(out.name).read_text()
        if not text:
            return [failure(name, f"exited with status {child.returncode}")]
    sections = []
    for data in json.loads(text):
        data["goals"] = [Goal(**g) for g in data["goals"]]
        sections.append(Section(**data))
    return sections


def stop_child(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM a benchmark child (it unwinds and cleans up), SIGKILL it late."""
    child.terminate()
    try:
        child.wait(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def failure(name: str, detail: str) -> Section:
    last = detail.strip().splitlines()[-1] if detail.strip() else "failed"
    return Section(
        title=f"{name}: FAILED",
        header=["benchmark", "error"],
        rows=[[name, last]],
        notes=["The benchmark did not finish:", "```\n" + detail.strip() + "\n```"],
    )


def _is_failure(section: Section) -> bool:
    return section.title.endswith(": FAILED")


def render_text(section: Section) -> str:
    """A section as a plain-text table for the terminal."""
    table = [section.header, *section.rows]
    widths = [
        max(len(str(row[i])) for row in table) for i in range(len(section.header))
    ]
    lines = [section.title, "-" * len(section.title)]
    for index, row in enumerate(table):
        lines.append(
            "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
        )
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    for goal in section.goals:
        mark = "✓" if goal.met else "✗"
        lines.append(f"{mark} {goal.text}: {goal.figure}")
    lines += [f"  {note}" for note in section.notes if not note.startswith("```")]
    return "\n".join(lines) + "\n"


def render_markdown(section: Section) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [f"## {section.title}", ""]
    lines.append("| " + " | ".join(cell(h) for h in section.header) + " |")
    lines.append("|" + "---|" * len(section.header))
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in section.rows]
    if section.goals:
        lines += ["", "Goals:", ""]
        lines += [
            f"- {'✓' if g.met else '✗'} {g.text}: {g.figure}" for g in section.goals
        ]
    if section.notes:
        lines.append("")
        for note in section.notes:
            lines += [note if note.startswith("```") else f"- {note}"]
    return "\n".join(lines) + "\n"


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (
        " (with uncommitted changes)" if git("status", "--porcelain") else ""
    )


def versions() -> dict[str, str]:
    postgres = debian_version("postgresql-15")
    if postgres == "not installed":
        postgres = debian_version("postgresql")
    return {
        "BrokeForge": version("brokeforge"),
        "Python": machine()["python"],
        "Django": version("django"),
        "asyncssh": version("asyncssh"),
        "Celery": version("celery"),
        "kombu": version("kombu"),
        "RQ": version("rq") + " (PyPI's newest; the issue names 3.0)",
        "redis (Python client)": version("redis"),
        "redis-server (Debian)": debian_version("redis-server"),
        "OpenSSH client (Debian)": debian_version("openssh-client"),
        "PostgreSQL (Debian)": postgres,
    }


_BLOCK = re.compile(r"<!-- bench:(\w+) -->\n.*?<!-- /bench:\1 -->\n", re.S)


def write_performance(results: list[tuple[str, list[Section], float]]) -> None:
    """Write docs/performance.md; sections of benchmarks not run this time
    are kept from the file as it was."""
    kept: dict[str, str] = {}
    if PERFORMANCE.exists():
        for match in _BLOCK.finditer(PERFORMANCE.read_text()):
            kept[match.group(1)] = match.group(0)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    for name, sections, elapsed in results:
        body = "".join(render_markdown(s) + "\n" for s in sections)
        kept[name] = (
            f"<!-- bench:{name} -->\n"
            f"<!-- finished {stamp} at commit {commit()}, after {elapsed:.0f} s -->\n"
            f"{body}<!-- /bench:{name} -->\n"
        )
    info = machine()
    lines = [
        "# Performance: BrokeForge side by side with Celery and RQ",
        "",
        "Written by `bench/run` (do not edit by hand; see docs/benchmarks.md for",
        "what each benchmark measures and how). Each section says when and at",
        "which commit it was measured; a run of some benchmarks keeps the others'",
        "sections as they were.",
        "",
        f"Last written {stamp} at commit {commit()}.",
        "",
        f"Machine: {info['os']}, {info['cpus']} CPUs, {info['memory']} of memory, "
        f"kernel {os.uname().release}.",
        "",
        "| software | version |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in versions().items()],
        "",
    ]
    order = [n for n in BENCHMARKS if n in kept]
    text = "\n".join(lines) + "\n" + "\n".join(kept[n] for n in order)
    PERFORMANCE.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
