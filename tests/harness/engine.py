"""An isolated Docker engine for one test session.

Everything the engine owns lives under one temporary directory: data root, exec root, pid file
and its unix socket. The machine's default engine and /var/lib/docker are never touched, and
`stop()` removes every container, volume and network the engine made before killing it.
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

# Debian's engine is 20.10 and the CLI may be newer: pin the API both understand.
API_VERSION = "1.41"
START_TIMEOUT_S = 60


class EngineExitedError(RuntimeError):
    """dockerd died while starting: no point waiting for it."""


@dataclass
class Engine:
    root: Path
    process: subprocess.Popen[bytes] | None = None
    _owns_root: bool = field(default=False, repr=False)

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        """The DOCKER_HOST value that reaches this engine (and only it)."""
        return f"unix://{self.socket}"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(DOCKER_HOST=self.host, DOCKER_API_VERSION=API_VERSION, DOCKER_CONFIG=str(self.root / "cli"))
        env.update(extra or {})
        return env

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 120,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this engine; on failure the error carries stderr."""
        result = subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=timeout, input=input, env=self.env(env)
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    @classmethod
    def start(cls, root: str | Path | None = None) -> Engine:
        """Start `dockerd` under `root` (a fresh temporary directory by default) and wait until it answers."""
        owns = root is None
        # unix socket paths are limited to 108 bytes: keep the directory short.
        path = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="se-engine-", dir="/tmp"))
        path.mkdir(parents=True, exist_ok=True)
        engine = cls(root=path, _owns_root=owns)
        # containerd namespaces allow [A-Za-z0-9] runs joined by single . _ -; mkdtemp may end in '_'.
        namespace = "se-" + "-".join(re.findall(r"[A-Za-z0-9]+", path.name))
        cmd = [
            "dockerd",
            f"--data-root={path / 'data'}",
            f"--exec-root={path / 'exec'}",
            f"--pidfile={path / 'dockerd.pid'}",
            f"-H={engine.host}",
            # No docker0 and no host iptables rules: other engines on this machine keep theirs, and the
            # nodes only talk to each other and to the host over their own bridge.
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            # overlay2 needs a data root on a real filesystem; set vfs where /tmp is itself an overlay.
            f"--storage-driver={os.environ.get('SWARM_ESTATE_STORAGE_DRIVER', 'overlay2')}",
            f"--containerd-namespace={namespace}",
            f"--containerd-plugins-namespace={namespace}-plugins",
        ]
        log = open(path / "dockerd.log", "wb")  # noqa: SIM115 - kept open for the engine's lifetime
        engine.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        process = engine.process

        def answers() -> bool:
            if process.poll() is not None:
                raise EngineExitedError(f"dockerd exited at start:\n{engine.log_tail()}")
            return engine.socket.exists() and engine.run("version", check=False, timeout=10).returncode == 0

        try:
            wait_until(answers, START_TIMEOUT_S, "dockerd to answer", every=0.3, retry_on=(subprocess.TimeoutExpired,))
        except AssertionError as exc:
            engine.stop()
            raise RuntimeError(f"{exc}:\n{engine.log_tail()}") from None
        return engine

    def log_tail(self, chars: int = 3000) -> str:
        log = self.root / "dockerd.log"
        return log.read_text(errors="replace")[-chars:] if log.exists() else ""

    def stop(self) -> None:
        """Remove what the engine made, stop it, and delete its directory. Safe to call twice."""
        if self.process is not None and self.process.poll() is None:
            ids = self.run("ps", "-aq", check=False).stdout.split()
            if ids:
                self.run("rm", "-fv", *ids, check=False, timeout=180)
            vols = self.run("volume", "ls", "-q", check=False).stdout.split()
            if vols:
                self.run("volume", "rm", "-f", *vols, check=False, timeout=120)
            self.run("network", "prune", "-f", check=False)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None
        if self._owns_root and self.root.exists():
            # Mounts left behind (network namespaces of the nodes' swarm, a killed engine's overlays)
            # would keep the directory busy: detach every one below the root, deepest first.
            for mountpoint in sorted(_mounts_below(self.root), key=len, reverse=True):
                subprocess.run(["umount", "-l", mountpoint], capture_output=True, check=False)
            shutil.rmtree(self.root, ignore_errors=True)


def _mounts_below(root: Path) -> list[str]:
    prefix = str(root.resolve()) + "/"
    points = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                points.append(point)
    return points
