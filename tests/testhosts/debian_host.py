"""A real Debian 12 host for integration tests, reachable over SSH on loopback.

The host is a chroot built with ``debootstrap`` in which a real ``sshd`` runs on
a free port of 127.0.0.1.  It is not a container: processes started in it run
on this machine (as root), share its network stack and kernel, and are found
through ``/proc/PID/root``.  That is enough to exercise the product's install
scripts against real apt/dpkg, real file permissions and a real OpenSSH server.

The base root filesystem is built once and cached (see :func:`ensure_base`);
each :class:`DebianHost` copies it to a fresh directory, so hosts are
independent and disposable.

Everything here needs root (mount, chroot, debootstrap).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BASE_NAME = f"{SUITE}-minbase"
LOOPBACK = "127.0.0.1"

#: Marker written into a base image once it is complete.  A base directory
#: without it is never used (it should not exist anyway: see ensure_base).
_COMPLETE_MARKER = ".brokeforge-base-complete"

#: Environment for commands run inside the chroot: the caller's environment
#: (pytest, virtualenv, CI variables) must not leak into the test host.
CHROOT_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
}

SSHD_START_TIMEOUT = 15.0


class DebianHostError(RuntimeError):
    """Raised when the test host cannot be built, started or cleaned up."""


def require_root() -> None:
    """Fail clearly when not root: debootstrap, mount and chroot all need it."""
    if os.geteuid() != 0:
        raise DebianHostError(
            "DebianHost must run as root (it uses debootstrap, mount and chroot); "
            f"current euid is {os.geteuid()}"
        )


def cache_dir() -> Path:
    """Where the base image is cached: $BROKEFORGE_TEST_CACHE or ~/.cache/..."""
    configured = os.environ.get("BROKEFORGE_TEST_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "brokeforge-tests"


def debian_mirror(
    sources: Path = Path("/etc/apt/sources.list.d/debian.sources"),
) -> str:
    """Return the machine's Debian mirror (first deb822 ``URIs:`` for bookworm).

    Falls back to deb.debian.org when the file is missing or unexpected.
    """
    try:
        text = sources.read_text()
    except OSError:
        return DEFAULT_MIRROR
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        suites = fields.get("suites", "").split()
        uris = fields.get("uris", "").split()
        if SUITE in suites and uris:
            return uris[0]
    return DEFAULT_MIRROR


# --------------------------------------------------------------------------
# Mount and process helpers
# --------------------------------------------------------------------------


def _unescape_mountinfo(field: str) -> str:
    """Decode the octal escapes (``\\040`` for space...) used in mountinfo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(path: Path) -> list[Path]:
    """All mount points at or below ``path``, deepest first (unmount order)."""
    base = os.path.realpath(path)
    found: list[Path] = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            target = _unescape_mountinfo(line.split()[4])
            if target == base or target.startswith(base + "/"):
                found.append(Path(target))
    # Stacked mounts share a target; keep one entry per mount so each is
    # unmounted once.  Deeper paths first, later (upper) mounts first.
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_all(path: Path) -> None:
    """Unmount everything at or below ``path``; lazy unmount as a fallback.

    Raises DebianHostError if anything is still mounted afterwards, so that
    callers never ``rm -rf`` through a bind mount of the real /dev.
    """
    for _ in range(10):
        targets = mounts_under(path)
        if not targets:
            return
        for target in targets:
            result = subprocess.run(
                ["umount", str(target)], capture_output=True, text=True
            )
            if result.returncode != 0:
                subprocess.run(["umount", "-l", str(target)], capture_output=True)
    remaining = mounts_under(path)
    if remaining:
        raise DebianHostError(f"could not unmount {remaining}")


def remove_tree(path: Path) -> None:
    """Unmount everything below ``path`` and delete it.

    ``--one-file-system`` is a second safety net: even if a mount slipped
    through, rm will not descend into another file system.
    """
    if not path.exists() and not path.is_symlink():
        return
    unmount_all(path)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def pids_rooted_at(root: Path) -> list[int]:
    """PIDs of all processes whose root directory (``/proc/PID/root``) is ``root``.

    Zombies and processes that exit while we look are skipped.
    """
    wanted = os.path.realpath(root)
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            proc_root = os.readlink(f"/proc/{entry}/root")
        except OSError:
            continue
        # A process keeps its root even if the directory is deleted.
        proc_root = proc_root.removesuffix(" (deleted)")
        if proc_root == wanted:
            found.append(int(entry))
    return found


def kill_rooted_at(root: Path, timeout: float = 10.0) -> None:
    """SIGKILL every process whose root is ``root`` until none is left.

    Repeated because a process may fork between the scan and the kill.
    """
    deadline = time.monotonic() + timeout
    while True:
        pids = pids_rooted_at(root)
        if not pids:
            return
        if time.monotonic() > deadline:
            raise DebianHostError(f"processes in {root} survived SIGKILL: {pids}")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (racy, callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def chroot_run(
    root: Path,
    command: str,
    *,
    check: bool = True,
    timeout: float | None = None,
    pass_fds: tuple[int, ...] = (),
    prefix: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with bash inside the chroot ``root`` (locally, not SSH).

    ``prefix`` goes before ``chroot`` (``ip netns exec NS`` for a host in its
    own network namespace).
    """
    result = subprocess.run(
        [*prefix, "chroot", str(root), "/bin/bash", "-c", command],
        capture_output=True,
        text=True,
        env=dict(CHROOT_ENV),
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        pass_fds=pass_fds,
    )
    if check and result.returncode != 0:
        raise DebianHostError(
            f"command failed in {root} (exit {result.returncode}): {command}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def mount_pseudo_filesystems(root: Path) -> None:
    """Mount proc, sysfs, /dev (bind) and /dev/pts (bind) inside ``root``.

    Bind mounts are made private so that mounting /dev/pts on top of the bound
    /dev can never propagate back onto the machine's own /dev.
    """
    _mount("-t", "proc", "proc", str(root / "proc"))
    _mount("-t", "sysfs", "sysfs", str(root / "sys"))
    _mount("--bind", "/dev", str(root / "dev"))
    _mount("--make-private", str(root / "dev"))
    _mount("--bind", "/dev/pts", str(root / "dev/pts"))
    _mount("--make-private", str(root / "dev/pts"))


def _write_resolv_conf(root: Path) -> None:
    target = root / "etc/resolv.conf"
    if target.is_symlink() or target.exists():
        target.unlink()
    target.write_text(Path("/etc/resolv.conf").read_text())
    target.chmod(0o644)  # apt resolves as its sandbox user, whatever the umask
    _pin_mirror_address(root)


LOOPBACK_HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def _pin_mirror_address(root: Path, attempts: int = 5) -> None:
    """Put the mirror's address in the host's /etc/hosts.

    The machine's name server fails now and then under load ("Temporary
    failure resolving"); resolving the mirror once here, with retries, keeps
    that out of every apt run in the host. Nothing is pinned if it cannot be
    resolved at all: apt then reports the failure itself.
    """
    name = urllib.parse.urlparse(debian_mirror()).hostname
    if not name:
        return
    for attempt in range(attempts):
        try:
            address = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)[0][4][0]
        except OSError:
            time.sleep(1 + attempt)
            continue
        hosts = root / "etc/hosts"
        # debootstrap's minbase writes no /etc/hosts: give it Debian's usual
        # loopback names, which services such as PostgreSQL look up.
        current = hosts.read_text() if hosts.exists() else LOOPBACK_HOSTS
        kept = [
            line
            for line in current.splitlines()
            if not line.rstrip().endswith(f" {name}")
        ]
        hosts.write_text("\n".join([*kept, f"{address} {name}"]) + "\n")
        hosts.chmod(0o644)
        return


# --------------------------------------------------------------------------
# The cached base image
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[int]:
    """An exclusive flock; blocks while another process (pytest run) holds it.

    Yields the lock's file descriptor.  A flock belongs to the open file, not
    to a process: children given the descriptor (``pass_fds``) keep the lock
    held even if we are killed, until they exit too.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield handle.fileno()
        # Closing the file releases the lock (unless a child still has it).


def ensure_base(cache: Path | None = None, *, mirror: str | None = None) -> Path:
    """Return the cached Debian base root filesystem, building it if needed.

    The base is ``debootstrap --variant=minbase --include=openssh-server``
    plus ``apt-get update`` (package lists are kept, so hosts can install
    packages without updating first; they age with the cache, so scripts
    under test should run ``apt-get update`` as on a real server).  Delete
    the cache directory to rebuild.  It is built in a temporary directory
    and renamed into place only when complete, under a file lock, so an
    interrupted build is never used and concurrent pytest runs build it once.
    """
    require_root()
    cache = cache or cache_dir()
    base = cache / BASE_NAME
    if (base / _COMPLETE_MARKER).exists():
        return base
    with _file_lock(cache / f"{BASE_NAME}.lock") as lock_fd:
        if (base / _COMPLETE_MARKER).exists():
            return base
        # Under the lock nobody else is building: leftovers are from
        # interrupted builds (possibly with debootstrap's mounts still active).
        # The build's child processes inherit the lock, so a debootstrap
        # orphaned by a killed pytest is waited for, not raced with.
        for stale in cache.glob(f"{BASE_NAME}.tmp-*"):
            remove_tree(stale)
        if base.exists():
            remove_tree(base)
        building = Path(tempfile.mkdtemp(prefix=f"{BASE_NAME}.tmp-", dir=cache))
        try:
            _build_base(building, mirror or debian_mirror(), lock_fd)
            (building / _COMPLETE_MARKER).write_text(f"{SUITE} minbase\n")
            building.rename(base)
        except BaseException:
            # Best effort: children of an interrupted debootstrap may still be
            # writing.  Whatever is left is removed by the next build.
            with contextlib.suppress(Exception):
                remove_tree(building)
            raise
    return base


def _build_base(target: Path, mirror: str, lock_fd: int) -> None:
    os.chmod(target, 0o755)
    log = target.parent / f"{BASE_NAME}.build.log"
    with open(log, "w") as log_file:
        result = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=openssh-server",
                SUITE,
                str(target),
                mirror,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            pass_fds=(lock_fd,),
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise DebianHostError(f"debootstrap failed (see {log}):\n{tail}")
    # debootstrap unmounts what it mounted, but check: the target is
    # about to be renamed and later copied.
    unmount_all(target)
    _write_resolv_conf(target)
    _mount("-t", "proc", "proc", str(target / "proc"))
    try:
        chroot_run(
            target,
            "apt-get update -q && apt-get clean",
            timeout=600,
            pass_fds=(lock_fd,),
        )
    finally:
        unmount_all(target)
    # Each host generates its own keys; the ones made by openssh-server's
    # postinst would otherwise be shared by every host.
    for key in (target / "etc/ssh").glob("ssh_host_*"):
        key.unlink()


# --------------------------------------------------------------------------
# Stale host registry (cleanup after a killed pytest)
# --------------------------------------------------------------------------


def _registry(cache: Path) -> Path:
    return cache / "hosts"


def _process_start_time(pid: int) -> str | None:
    """Start time of ``pid`` from /proc/PID/stat, to detect PID reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may contain spaces, skip past it.
    return stat.rsplit(")", 1)[1].split()[19]


def cleanup_stale_hosts(cache: Path | None = None) -> list[Path]:
    """Kill, unmount and remove hosts whose owning process is gone.

    A host normally cleans up in :meth:`DebianHost.close`; this handles a
    pytest that was SIGKILLed (its sshd and mounts would otherwise stay).
    Returns the roots that were cleaned.
    """
    cache = cache or cache_dir()
    registry = _registry(cache)
    if not registry.is_dir():
        return []
    # Locked so that two pytest runs do not clean up the same host at once.
    with _file_lock(cache / "hosts.lock"):
        return _cleanup_stale_entries(registry)


def _cleanup_stale_entries(registry: Path) -> list[Path]:
    cleaned: list[Path] = []
    for entry in registry.glob("*.json"):
        try:
            info = json.loads(entry.read_text())
            owner, started, root = int(info["pid"]), info["start"], Path(info["root"])
        except (OSError, ValueError, KeyError):
            entry.unlink(missing_ok=True)
            continue
        if _process_start_time(owner) == started:
            continue  # owner still alive
        kill_rooted_at(root)
        netns, link = info.get("netns"), info.get("link")
        if netns:
            remove_netns(netns)
        if link:
            remove_link(link)
        remove_tree(root)
        entry.unlink(missing_ok=True)
        cleaned.append(root)
    return cleaned


def netns_exists(name: str) -> bool:
    return (Path("/run/netns") / name).exists()


def remove_netns(name: str, timeout: float = 10.0) -> None:
    """Kill every process in network namespace ``name``, then delete it.

    Deleting the namespace destroys the veth end inside it, and with it the
    peer on the machine's side.  Missing namespaces are ignored.
    """
    if not netns_exists(name):
        return
    deadline = time.monotonic() + timeout
    while True:
        listed = subprocess.run(
            ["ip", "netns", "pids", name], capture_output=True, text=True
        )
        pids = [int(pid) for pid in listed.stdout.split()]
        if not pids:
            break
        if time.monotonic() > deadline:
            raise DebianHostError(f"processes in netns {name} survived: {pids}")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    result = subprocess.run(
        ["ip", "netns", "delete", name], capture_output=True, text=True
    )
    if result.returncode != 0 and netns_exists(name):
        raise DebianHostError(f"could not delete netns {name}: {result.stderr}")


def remove_link(name: str) -> None:
    """Delete network link ``name`` of the machine's namespace if it exists."""
    if Path("/sys/class/net", name).exists():
        subprocess.run(["ip", "link", "delete", name], capture_output=True)


# --------------------------------------------------------------------------
# The host
# --------------------------------------------------------------------------


class DebianHost:
    """A disposable Debian 12 chroot running sshd on 127.0.0.1.

    Usage::

        with DebianHost(tmp_path, public_key_line) as host:
            # connect to (host.host, host.port) as root with the key pair
            host.run("dpkg -s nginx")

    ``authorized_key`` is an OpenSSH public key line; it becomes root's only
    ``authorized_keys`` entry.  The chroot lives in ``workdir / "rootfs"``;
    sshd's log goes to ``workdir / "sshd.log"``.

    sshd runs without systemd: ``/usr/sbin/policy-rc.d`` exits 101, so package
    maintainer scripts do not start (or restart) services.  Processes started
    over SSH run on this machine as root with the chroot as their root
    directory and the machine's network.
    """

    host: str = LOOPBACK

    def __init__(
        self,
        workdir: Path,
        authorized_key: str,
        *,
        cache: Path | None = None,
    ) -> None:
        require_root()
        self.workdir = Path(workdir)
        self.root = self.workdir / "rootfs"
        self.sshd_log = self.workdir / "sshd.log"
        self.authorized_key = authorized_key.strip()
        self.port: int = 0
        self._cache = cache or cache_dir()
        self._sshd: subprocess.Popen[bytes] | None = None
        self._registry_entry: Path | None = None
        self._started = False
        #: Goes before ``chroot`` in every local command and for sshd.
        self.command_prefix: tuple[str, ...] = ()

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Copy the base, prepare the chroot and start sshd (idempotent)."""
        if self._started:
            return
        base = ensure_base(self._cache)
        cleanup_stale_hosts(self._cache)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.root.exists():
            raise DebianHostError(f"{self.root} already exists")
        self._started = True
        try:
            self._register()
            subprocess.run(
                ["cp", "-a", "--reflink=auto", str(base), str(self.root)],
                check=True,
                capture_output=True,
            )
            (self.root / _COMPLETE_MARKER).unlink(missing_ok=True)
            mount_pseudo_filesystems(self.root)
            self._prepare_network()
            self._configure()
            self._start_sshd_on_free_port()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Kill every process in the chroot, unmount everything, delete it.

        Safe to call more than once and after a partial start.
        """
        if not self._started:
            return
        self._stop_sshd_process()
        if self.root.exists():
            kill_rooted_at(self.root)
        self._release_network()
        if self.root.exists():
            remove_tree(self.root)
        if self._registry_entry is not None:
            self._registry_entry.unlink(missing_ok=True)
            self._registry_entry = None
        self._started = False

    def _register(self) -> None:
        """Record this host so a later run can clean it up if we get killed."""
        registry = _registry(self._cache)
        registry.mkdir(parents=True, exist_ok=True)
        entry = registry / f"{os.getpid()}-{id(self)}-{time.monotonic_ns()}.json"
        entry.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "start": _process_start_time(os.getpid()),
                    "root": str(self.root.resolve()),
                    **self._registry_extra(),
                }
            )
        )
        self._registry_entry = entry

    # -- network hooks (the namespaced host overrides them) -------------------

    def _registry_extra(self) -> dict[str, str]:
        """More for the stale-host registry: ``netns`` and ``link`` names."""
        return {}

    def _prepare_network(self) -> None:
        """Set up what sshd needs to listen on :attr:`host` (nothing on loopback)."""

    def _release_network(self) -> None:
        """Undo :meth:`_prepare_network`; runs after the host's processes died."""

    def _configure(self) -> None:
        policy = self.root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\n# No init system in this test host.\nexit 101\n")
        policy.chmod(0o755)
        _write_resolv_conf(self.root)
        (self.root / "run/sshd").mkdir(mode=0o755, exist_ok=True)
        ssh_dir = self.root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        authorized = ssh_dir / "authorized_keys"
        authorized.write_text(self.authorized_key + "\n")
        authorized.chmod(0o600)
        self._generate_host_keys()

    def _generate_host_keys(self) -> None:
        for key in (self.root / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        self.run("ssh-keygen -A")

    # -- sshd ----------------------------------------------------------------

    @property
    def sshd_pid(self) -> int | None:
        """PID of the sshd listener, or None when it is not running."""
        if self._sshd is None or self._sshd.poll() is not None:
            return None
        return self._sshd.pid

    def _start_sshd_on_free_port(self) -> None:
        last_error: DebianHostError | None = None
        for _ in range(5):
            port = free_loopback_port()
            try:
                self._start_sshd(port)
            except DebianHostError as error:  # most likely lost a port race
                last_error = error
                continue
            self.port = port
            return
        assert last_error is not None
        raise last_error

    def _start_sshd(self, port: int) -> None:
        with open(self.sshd_log, "ab") as log:
            self._sshd = subprocess.Popen(
                [
                    *self.command_prefix,
                    "chroot",
                    str(self.root),
                    "/usr/sbin/sshd",
                    "-D",
                    "-e",
                    "-p",
                    str(port),
                    "-o",
                    f"ListenAddress={self.host}",
                    "-o",
                    "PermitRootLogin=prohibit-password",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=dict(CHROOT_ENV),
                # Own process group: a Ctrl-C aimed at pytest must not kill
                # sshd before close() has a chance to clean up in order.
                start_new_session=True,
            )
        try:
            self._wait_for_banner(port)
        except BaseException:
            self._stop_sshd_process()
            raise

    def _wait_for_banner(self, port: int) -> None:
        """Wait until sshd answers with an SSH banner (not just any listener)."""
        assert self._sshd is not None
        deadline = time.monotonic() + SSHD_START_TIMEOUT
        while time.monotonic() < deadline:
            if self._sshd.poll() is not None:
                raise DebianHostError(
                    f"sshd exited with {self._sshd.returncode}; log:\n"
                    + self.sshd_log.read_text(errors="replace")[-2000:]
                )
            try:
                with socket.create_connection((self.host, port), timeout=2) as sock:
                    if sock.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise DebianHostError(f"sshd did not answer on port {port}")

    def _stop_sshd_process(self) -> None:
        if self._sshd is None:
            return
        if self._sshd.poll() is None:
            self._sshd.terminate()
            try:
                self._sshd.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._sshd.kill()
                self._sshd.wait()
        self._sshd = None

    def stop_sshd(self) -> None:
        """Stop the sshd listener; established SSH sessions keep running."""
        self._stop_sshd_process()

    def start_sshd(self) -> None:
        """Start the sshd listener again on the same port."""
        if self.sshd_pid is not None:
            return
        self._start_sshd(self.port)

    def new_host_key(self) -> None:
        """Regenerate all host keys and restart sshd on the same port.

        For tests of a changed host key (known_hosts mismatch).
        """
        self._stop_sshd_process()
        self._generate_host_keys()
        self._start_sshd(self.port)

    def host_public_keys(self) -> dict[str, str]:
        """The host's public keys as ``{"ssh-ed25519": "ssh-ed25519 AAAA...", ...}``."""
        keys: dict[str, str] = {}
        for path in sorted((self.root / "etc/ssh").glob("ssh_host_*_key.pub")):
            line = path.read_text().strip()
            algorithm, blob = line.split()[:2]
            keys[algorithm] = f"{algorithm} {blob}"
        return keys

    def known_hosts_text(self) -> str:
        """The host's current keys as known_hosts content (``[127.0.0.1]:PORT ...``).

        On port 22 the host is written bare, as OpenSSH does.
        """
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return "".join(f"{name} {line}\n" for line in self.host_public_keys().values())

    # -- inspection ----------------------------------------------------------

    def run(
        self, cmd: str, check: bool = True, *, timeout: float | None = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command inside the chroot locally (not over SSH).

        For test assertions and setup.  Output is captured as text.  With
        ``check`` a non-zero exit raises DebianHostError with the output.
        A command that leaves a background process must redirect that
        process's output (``nohup cmd >/dev/null 2>&1 &``), or this waits
        for it: the captured pipes stay open while it runs.
        """
        return chroot_run(
            self.root, cmd, check=check, timeout=timeout, prefix=self.command_prefix
        )

    def ensure_packages(self, *packages: str) -> None:
        """Install ``packages`` in the host (for test tooling) unless present.

        They are marked as installed by hand, so that a product script's
        ``apt-get autoremove`` leaves them alone.
        """
        names = " ".join(packages)
        self.run(
            f"dpkg -s {names} >/dev/null 2>&1 || "
            f"(apt-get update -q && apt-get install -y -q {names}); "
            f"apt-mark manual {names} >/dev/null"
        )

    def pids(self, *, include_listener: bool = True) -> list[int]:
        """PIDs of all processes on this machine whose root is the chroot.

        This includes the sshd listener (see :attr:`sshd_pid`) and the
        per-connection sshd processes unless ``include_listener`` is False,
        in which case only the listener itself is left out.
        """
        pids = pids_rooted_at(self.root)
        listener = self.sshd_pid
        if not include_listener and listener is not None:
            pids = [pid for pid in pids if pid != listener]
        return pids


# --------------------------------------------------------------------------
# dpkg lock holder
# --------------------------------------------------------------------------

_LOCK_HOLDER = r"""
import fcntl, os, sys
fds = []
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        # Python's lockf is fcntl(F_SETLK, F_WRLCK): the POSIX record lock
        # that apt and dpkg take, so they see it as held.
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        print(f"failed {path}: {error}", flush=True)
        sys.exit(1)
    fds.append(fd)
print("locked", flush=True)
# Hold until the parent closes stdin (or dies): no orphaned lock holders.
sys.stdin.read()
"""


@contextlib.contextmanager
def hold_dpkg_lock(root: Path) -> Iterator[None]:
    """Hold dpkg's locks in the chroot ``root`` from a separate process.

    Takes write locks on ``var/lib/dpkg/lock-frontend`` then ``var/lib/dpkg/lock``
    (apt's order), the way a concurrent apt run (unattended-upgrades...)
    would.  POSIX locks belong to a process, so they must be taken from
    another process for apt in the chroot to see a conflict.
    """
    dpkg = Path(root) / "var/lib/dpkg"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _LOCK_HOLDER,
            str(dpkg / "lock-frontend"),
            str(dpkg / "lock"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        status = holder.stdout.readline().strip()
        if status != "locked":
            raise DebianHostError(f"could not take the dpkg locks: {status!r}")
        yield
    finally:
        if holder.stdin is not None:
            holder.stdin.close()
        try:
            holder.wait(timeout=5)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
