"""A libvirt daemon of the test's own, as the test engine is a dockerd of its own.

libvirt's system mode keeps its state in fixed places (/etc/libvirt, /var/lib/libvirt, /run/libvirt): what can
move does (the sockets, the pid files, the storage pool's directory, all under one temporary directory), and
`stop()` puts the rest back as it found it: every domain, network and pool that appeared while it ran is
destroyed and undefined, the iptables chains libvirt added for NAT networks go, the daemons it started are
stopped. Tests assert that their own `pulumi destroy` left nothing, before `stop()` tidies up after a failure.

Set up as issue 15 measured on this machine kind: Debian's libvirt 9 + QEMU 7.2 without systemd, the users the
package scripts would have made, `virtlogd -d` and `libvirtd -d`; KVM guests hang here, so the estates built
on it use domain type `qemu` (TCG).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .wait import wait_until

PACKAGES = ("libvirt-daemon", "libvirt-daemon-driver-qemu", "libvirt-clients", "libvirt-daemon-config-network",
            "dnsmasq-base", "qemu-system-x86", "qemu-utils")
START_TIMEOUT_S = 60
IPTABLES_TABLES = ("filter", "nat", "mangle")
IPTABLES = ("iptables", "ip6tables")  # libvirt's NAT networks add LIBVIRT_* chains to both


class LibvirtdRunningError(RuntimeError):
    """Another libvirtd runs here: two system-mode daemons would share /run/libvirt's driver state."""


def missing() -> list[str]:
    """The binaries this needs that the machine lacks (tests/run installs them)."""
    return [b for b in ("libvirtd", "virtlogd", "virsh", "qemu-system-x86_64", "qemu-img") if shutil.which(b) is None]


def _run(*cmd: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _ensure_accounts() -> None:
    """What libvirt-daemon-system's maintainer scripts make: QEMU runs guests as libvirt-qemu:libvirt-qemu."""
    for group in ("kvm", "libvirt-qemu"):
        if _run("getent", "group", group, check=False).returncode != 0:
            _run("groupadd", "-r", group)
    if _run("getent", "passwd", "libvirt-qemu", check=False).returncode != 0:
        _run("useradd", "-r", "-g", "libvirt-qemu", "-G", "kvm", "-d", "/var/lib/libvirt", "-s", "/usr/sbin/nologin",
             "libvirt-qemu")
    Path("/var/log/libvirt").mkdir(parents=True, exist_ok=True)


def _pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _iptables_libvirt_rules() -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for tool in IPTABLES:
        if shutil.which(tool) is None:
            continue
        for table in IPTABLES_TABLES:
            rules = _run(tool, "-t", table, "-S", check=False).stdout.splitlines()
            out[(tool, table)] = [r for r in rules if "LIBVIRT_" in r]
    return out


@dataclass
class Libvirtd:
    root: Path
    pool: str
    _started: list[Path] = field(default_factory=list, repr=False)
    _before: dict[str, set[str]] = field(default_factory=dict, repr=False)
    _iptables_before: dict[tuple[str, str], list[str]] = field(default_factory=dict, repr=False)

    @property
    def socket(self) -> Path:
        return self.root / "run" / "libvirt-sock"

    @property
    def uri(self) -> str:
        """The connection URI of this daemon (and only it): the provider and virsh both take `?socket=`."""
        return f"qemu:///system?socket={self.socket}"

    @property
    def pool_dir(self) -> Path:
        return self.root / "pool"

    def virsh(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        return _run("virsh", "-q", "-c", self.uri, *args, check=check, timeout=timeout).stdout

    def names(self, kind: str) -> set[str]:
        """Every domain, network or pool the daemon knows, running or not."""
        listing = {"domain": ("list", "--all", "--name"), "network": ("net-list", "--all", "--name"),
                   "pool": ("pool-list", "--all", "--name")}[kind]
        return {line.strip() for line in self.virsh(*listing).splitlines() if line.strip()}

    def volumes(self) -> set[str]:
        return {line.split()[0] for line in self.virsh("vol-list", self.pool).splitlines() if line.strip()}

    @classmethod
    def start(cls, pool: str = "swarm-estate-test", owned_prefix: str | None = None) -> Libvirtd:
        """A new daemon. `owned_prefix`: domains and networks of that name prefix are the test's own, whatever
        a killed earlier run left of them (libvirt keeps definitions in /etc/libvirt) is removed first."""
        if missing():
            raise RuntimeError(f"libvirt is not installed (missing {', '.join(missing())}): apt-get install "
                               f"--no-install-recommends {' '.join(PACKAGES)}")
        if _run("pgrep", "-x", "libvirtd", check=False).returncode == 0:
            # Two system-mode daemons would share /run/libvirt's driver state.
            raise LibvirtdRunningError("a libvirtd already runs on this machine: stop it, or run this where none does")
        _ensure_accounts()
        # unix socket paths are limited to 108 bytes: keep the directory short.
        root = Path(tempfile.mkdtemp(prefix="se-libvirt-", dir="/tmp"))
        daemon = cls(root=root, pool=pool)
        (root / "run").mkdir()
        daemon.pool_dir.mkdir()
        # Guests run as libvirt-qemu: it must reach the pool's files through the directories above them.
        root.chmod(0o711)
        (root / "libvirtd.conf").write_text(
            f'unix_sock_dir = "{root / "run"}"\n'
            'unix_sock_rw_perms = "0700"\n'
            'auth_unix_rw = "none"\nauth_unix_ro = "none"\n'
        )
        daemon._iptables_before = _iptables_libvirt_rules()
        try:
            if _run("pgrep", "-x", "virtlogd", check=False).returncode != 0:
                _run("virtlogd", "-d", "-p", str(root / "virtlogd.pid"))
                daemon._started.append(root / "virtlogd.pid")
            _run("libvirtd", "-d", "-f", str(root / "libvirtd.conf"), "-p", str(root / "libvirtd.pid"))
            daemon._started.append(root / "libvirtd.pid")
            wait_until(lambda: daemon.virsh("version", check=False), START_TIMEOUT_S, "libvirtd answering")
            if owned_prefix:
                stale = {kind: {n for n in daemon.names(kind) if n.startswith(owned_prefix)}
                         for kind in ("domain", "network")}
                daemon._remove(stale)
            daemon._before = {kind: daemon.names(kind) for kind in ("domain", "network", "pool")}
            daemon.virsh("pool-create-as", pool, "dir", "--target", str(daemon.pool_dir))
        except BaseException:
            daemon.stop()
            raise
        return daemon

    def leftovers(self) -> dict[str, set[str]]:
        """What appeared since start and is still defined (the test pool aside), with the pool's volumes."""
        out = {kind: self.names(kind) - self._before.get(kind, set()) for kind in ("domain", "network", "pool")}
        out["pool"] -= {self.pool}
        out["volume"] = self.volumes() if self.pool in self.names("pool") else set()
        return {k: v for k, v in out.items() if v}

    def _remove(self, names: dict[str, set[str]]) -> None:
        """Destroy and undefine, each on its own: one that fails does not keep the others."""
        steps = {"domain": (("destroy",), ("undefine", "--nvram")), "network": (("net-destroy",), ("net-undefine",)),
                 "pool": (("pool-destroy",), ("pool-undefine",))}
        for kind in ("domain", "network", "pool"):
            for name in names.get(kind, ()):
                for step in steps[kind]:
                    try:
                        self.virsh(*step, name, check=False)
                    except subprocess.TimeoutExpired:
                        pass

    def stop(self) -> None:
        try:
            if self.socket.exists():
                try:
                    left = self.leftovers()
                except (RuntimeError, subprocess.TimeoutExpired):
                    left = {}
                self._remove({**left, "pool": {self.pool, *left.get("pool", ())}})
        finally:
            for pidfile in reversed(self._started):
                pid = _pid_alive(pidfile)
                if pid is not None:
                    os.kill(pid, signal.SIGTERM)
                    try:
                        wait_until(lambda p=pidfile: _pid_alive(p) is None, START_TIMEOUT_S, f"{pidfile.stem} to exit")
                    except AssertionError:
                        os.kill(pid, signal.SIGKILL)
            self._started.clear()
            self._restore_iptables()
            shutil.rmtree(self.root, ignore_errors=True)

    def _restore_iptables(self) -> None:
        """libvirt adds LIBVIRT_* chains for NAT networks and keeps them when the last network goes."""
        for (tool, table), rules in _iptables_libvirt_rules().items():
            before = set(self._iptables_before.get((tool, table), []))
            jumps = [r for r in rules if r.startswith("-A ") and r not in before]
            chains = [r.split()[1] for r in rules if r.startswith("-N ") and r not in before]
            for rule in jumps:
                _run(tool, "-t", table, *re.sub(r"^-A ", "-D ", rule).split(), check=False)
            for chain in chains:
                _run(tool, "-t", table, "-F", chain, check=False)
                _run(tool, "-t", table, "-X", chain, check=False)
