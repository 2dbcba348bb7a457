"""The remote command every system runs in benchmarks 1 and 2.

It first writes a start line on the host, so a job that runs twice is seen.
"""

from __future__ import annotations

# Both paths are on the test host (a chroot only the benchmark uses).
#: Where each run of the job writes "start TAG EPOCH" on the host.
START_LOG = "/var/tmp/bench-starts.log"  # noqa: S108
#: A fifo nobody writes to: `cat` on it blocks reading for ever.
FIFO = "/var/tmp/bench-fifo"  # noqa: S108


def remote_command(mode: str, tag: str, seconds: float = 30) -> str:
    """The shell command the job runs on the host.

    `sleep` runs `seconds`; `block` hangs in a blocking read that never ends.
    """
    if mode not in ("sleep", "block"):
        raise ValueError(f"unknown mode {mode!r}")
    if not tag.replace("-", "").isalnum():
        raise ValueError(f"bad tag {tag!r}")
    mark = f'echo "start {tag} $(date +%s.%N)" >> {START_LOG}'
    if mode == "sleep":
        return f"{mark}; sleep {float(seconds)}"
    return f"{mark}; [ -p {FIFO} ] || mkfifo {FIFO}; cat {FIFO}"
