"""Docker-in-docker swarm nodes on an isolated engine, reachable over real SSH.

A `Lab` owns one bridge network with fixed node addresses and one SSH key pair made for the
session. Each node is a container of the offline node image running sshd and its own dockerd,
with `/var/lib/docker` on its own volume so images and swarm state survive a node restart.

With `systemd=True` (for the Lab, or one `add_node`) a node is an "existing host" instead: the image of
`hosts.host_image`, systemd as PID 1 starting sshd, containerd and docker.service like on a real machine
(see SYSTEMD_NODE_ARGS), and the session key in the authorized_keys of root and of `ops`.
"""

from __future__ import annotations

import io
import shlex
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from .engine import Engine
from .hosts import LOGIN_USERS
from .wait import wait_until

# The kernel refuses --privileged here (no CAP_SYS_RESOURCE in the bounding set); this is the
# widest set it accepts, and enough for an inner dockerd with overlay networking.
NODE_SECURITY_ARGS = (
    "--cap-add",
    "ALL",
    "--cap-drop",
    "SYS_RESOURCE",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    "--security-opt",
    "systempaths=unconfined",
    "--device-cgroup-rule",
    "a *:* rwm",
)
# Systemd "existing hosts" (hosts.host_image): the same, except where PID 1 is systemd on a shared machine.
SYSTEMD_NODE_ARGS = (
    "--cap-add",
    "ALL",
    "--cap-drop",
    "SYS_RESOURCE",
    # The machine's clock is every container's: a host's chronyd runs without steering it (-x), and may not.
    "--cap-drop",
    "SYS_TIME",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    # No systempaths=unconfined: /proc/sys stays read-only but for the host's own /proc/sys/net (the image's
    # lab-host-init reopens it), so neither systemd nor dockerd can rewrite the machine's kernel settings.
    "--device-cgroup-rule",
    "a *:* rwm",
    # The container's own cgroup namespace: systemd finds its cgroup at the root of every v1 hierarchy.
    "--cgroupns",
    "private",
    "--tmpfs",
    "/run",
    "--tmpfs",
    "/run/lock",
    "--tmpfs",
    "/tmp",
)
READY_TIMEOUT_S = 90
# dockerd gives its containers 10 s on shutdown (15 s in all), systemd the units 90 s: the engine waits this long.
SYSTEMD_STOP_TIMEOUT_S = 60


@dataclass
class Node:
    lab: Lab
    name: str
    address: IPv4Address
    systemd: bool = False

    @property
    def container(self) -> str:
        return f"{self.lab.prefix}-{self.name}"

    def ssh(
        self, command: str, *, check: bool = True, timeout: float = 120, input: str | None = None, user: str = "root"
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` through the node's sshd as `user` (a real SSH session, like the remote provider)."""
        result = subprocess.run(
            ["ssh", *self.lab.ssh_options(), f"{user}@{self.address}", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"ssh {user}@{self.name}: {command[:200]!r} failed ({result.returncode}):\n{result.stderr.strip()}"
            )
        return result

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The node's own docker CLI, over SSH."""
        return self.ssh(" ".join(shlex.quote(a) for a in ("docker", *args)), check=check, timeout=timeout)

    def stop(self) -> None:
        # A systemd host halts in order (its dockerd stops its containers first): give it the time a machine has.
        grace = SYSTEMD_STOP_TIMEOUT_S if self.systemd else 10
        self.lab.engine.run("stop", "-t", str(grace), self.container, timeout=grace + 50)

    def start(self) -> None:
        self.lab.engine.run("start", self.container)
        self.wait_ready()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until the node's own dockerd answers over SSH."""
        self._wait("docker info --format '{{.ServerVersion}}'", timeout)

    def wait_ssh(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until the node's sshd lets root in (its dockerd may still be starting)."""
        self._wait("echo up", timeout)

    def _wait(self, probe: str, timeout: float) -> None:
        def answered() -> bool:
            result = self.ssh(probe, check=False, timeout=10)
            if result.returncode == 0 and result.stdout.strip():
                return True
            raise ConnectionError(result.stderr.strip())  # the last refusal is the diagnosis

        try:
            wait_until(answered, timeout, f"node {self.name}", retry_on=(ConnectionError, subprocess.TimeoutExpired))
        except AssertionError as exc:
            raise RuntimeError(f"{exc}\n{self.diagnostics()}") from None

    def diagnostics(self) -> str:
        """What the engine and the node say about its start, for an error message."""
        logs = self.lab.engine.run("logs", "--tail", "30", self.container, check=False)
        if self.systemd:
            inner = self.lab.engine.run(
                "exec",
                self.container,
                "sh",
                "-c",
                "systemctl is-system-running; systemctl --failed --no-legend --no-pager; "
                "journalctl --no-pager -n 30 -u ssh.service -u containerd.service -u docker.service",
                check=False,
            )
            return f"{logs.stdout}{logs.stderr}\nsystemd:\n{inner.stdout}{inner.stderr}"
        inner = self.lab.engine.run("exec", self.container, "tail", "-n", "30", "/var/log/dockerd.log", check=False)
        return f"{logs.stderr}\ninner dockerd:\n{inner.stdout}"


@dataclass
class Lab:
    """Nodes on one bridge of `engine`. Use as a context manager, or call `close()`."""

    engine: Engine
    image: str
    subnet: IPv4Network
    workdir: Path
    prefix: str = "se"
    nodes: dict[str, Node] = field(default_factory=dict)
    # Nodes are systemd hosts (`image` is then hosts.host_image's) unless add_node says otherwise.
    systemd: bool = False

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.key = self.workdir / "id_ed25519"
        if not self.key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "swarm-estate-test", "-f", str(self.key)],
                check=True,
                timeout=30,
            )
        self.network = f"{self.prefix}-net"
        if self.engine.run("network", "inspect", self.network, check=False).returncode != 0:
            self.engine.run(
                "network",
                "create",
                "--driver",
                "bridge",
                "--subnet",
                str(self.subnet),
                "--gateway",
                str(self.subnet.network_address + 1),
                self.network,
            )

    @property
    def public_key(self) -> str:
        return self.key.with_suffix(".pub").read_text().strip()

    def ssh_options(self) -> list[str]:
        return [
            "-i",
            str(self.key),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            f"UserKnownHostsFile={self.workdir / 'known_hosts'}",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=5",
        ]

    def add_node(
        self,
        name: str,
        address: IPv4Address | str,
        *,
        publish_api: int | None = None,
        wait: bool = True,
        image: str | None = None,
        systemd: bool | None = None,
    ) -> Node:
        """Start one node container (`<prefix>-<name>`, hostname `name`) at a fixed address.

        `image` defaults to the Lab's, `systemd` to the Lab's: a systemd host is created, given the
        session key (root's and ops's authorized_keys, before PID 1 starts) and then started.
        """
        node = Node(self, name, IPv4Address(address), systemd=self.systemd if systemd is None else systemd)
        identity = [
            *("--name", node.container, "--hostname", name, "--network", self.network, "--ip", str(node.address)),
            *("-v", f"{node.container}-docker:/var/lib/docker"),
        ]
        if node.systemd:
            if publish_api is not None:
                raise ValueError("a systemd host's dockerd listens on its unix socket only: no API to publish")
            self.engine.run("create", *identity, *SYSTEMD_NODE_ARGS, image or self.image)
            self.nodes[name] = node
            self._authorize(node)
            self.engine.run("start", node.container)
        else:
            args = ["run", "-d", *identity, *NODE_SECURITY_ARGS, "--tmpfs", "/run", "--tmpfs", "/tmp"]
            args += ["-e", f"NODE_AUTHORIZED_KEY={self.public_key}"]
            if publish_api is not None:
                args += ["-p", f"127.0.0.1:{publish_api}:2375"]
            self.engine.run(*args, image or self.image)
            self.nodes[name] = node
        if wait:
            node.wait_ready()
        return node

    def add_nodes(
        self, names_and_addresses: list[tuple[str, str]], *, image: str | None = None, systemd: bool | None = None
    ) -> list[Node]:
        """Start several nodes at once, then wait for all of them (they boot in parallel)."""
        nodes = [self.add_node(n, a, wait=False, image=image, systemd=systemd) for n, a in names_and_addresses]
        for node in nodes:
            node.wait_ready()
        return nodes

    def _authorize(self, node: Node) -> None:
        """The session key into each login user's ~/.ssh/authorized_keys, owned by that user (`docker cp -a`
        of a tar keeps owners): systemd passes no container environment to sshd, so it cannot come from there."""
        key = (self.public_key + "\n").encode()
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for uid, gid, home in LOGIN_USERS.values():
                ssh_dir = tarfile.TarInfo(f"{home.strip('/')}/.ssh")
                ssh_dir.type, ssh_dir.mode, ssh_dir.uid, ssh_dir.gid = tarfile.DIRTYPE, 0o700, uid, gid
                ssh_dir.mtime = int(time.time())
                tar.addfile(ssh_dir)
                keys = tarfile.TarInfo(f"{ssh_dir.name}/authorized_keys")
                keys.mode, keys.uid, keys.gid, keys.size, keys.mtime = 0o600, uid, gid, len(key), ssh_dir.mtime
                tar.addfile(keys, io.BytesIO(key))
        copied = subprocess.run(
            ["docker", "cp", "-a", "-", f"{node.container}:/"],
            input=archive.getvalue(),
            capture_output=True,
            timeout=60,
            env=self.engine.env(),
        )
        if copied.returncode != 0:
            raise RuntimeError(
                f"docker cp of the authorized keys into {node.container} failed: "
                f"{copied.stderr.decode(errors='replace').strip()}"
            )

    def load_image(self, ref: str, nodes: list[Node] | None = None) -> None:
        """Copy an image of the outer engine into nodes (docker save | docker load, no registry)."""
        saved = self.workdir / "image.tar"
        self.engine.run("save", "-o", str(saved), ref, timeout=300)
        for node in nodes or list(self.nodes.values()):
            with saved.open("rb") as data:
                subprocess.run(
                    ["ssh", *self.ssh_options(), f"root@{node.address}", "docker load -q"],
                    stdin=data,
                    check=True,
                    capture_output=True,
                    timeout=300,
                )

    def close(self) -> None:
        for node in list(self.nodes.values()):
            self.engine.run("rm", "-fv", node.container, check=False, timeout=120)
            self.engine.run("volume", "rm", "-f", f"{node.container}-docker", check=False)
        self.nodes.clear()
        self.engine.run("network", "rm", self.network, check=False)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def free_subnet(
    candidates: tuple[str, ...] = (
        "172.31.240.0/24",
        "172.31.241.0/24",
        "172.30.242.0/24",
        "10.251.240.0/24",
        "10.252.240.0/24",
    ),
) -> IPv4Network:
    """A /24 no route on this machine overlaps, so the lab's bridge cannot shadow another network."""
    routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True, check=True).stdout
    taken = []
    for line in routes.splitlines():
        dest = line.split()[0]
        if dest != "default":
            taken.append(IPv4Network(dest if "/" in dest else f"{dest}/32", strict=False))
    for cidr in candidates:
        net = IPv4Network(cidr)
        if not any(net.overlaps(t) for t in taken):
            return net
    raise RuntimeError(f"all candidate lab subnets overlap a route on this machine: {', '.join(candidates)}")
