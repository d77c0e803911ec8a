"""Docker-in-docker swarm nodes on an isolated engine, reachable over real SSH.

A `Lab` owns one bridge network with fixed node addresses and one SSH key pair made for the
session. Each node is a container of the offline node image running sshd and its own dockerd,
with `/var/lib/docker` on its own volume so images and swarm state survive a node restart.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from .engine import Engine

# The kernel refuses --privileged here (no CAP_SYS_RESOURCE in the bounding set); this is the
# widest set it accepts, and enough for an inner dockerd with overlay networking.
NODE_SECURITY_ARGS = (
    "--cap-add", "ALL",
    "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined",
    "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined",
    "--device-cgroup-rule", "a *:* rwm",
)
READY_TIMEOUT_S = 90


@dataclass
class Node:
    lab: Lab
    name: str
    address: IPv4Address

    @property
    def container(self) -> str:
        return f"{self.lab.prefix}-{self.name}"

    def ssh(self, command: str, *, check: bool = True, timeout: float = 120, input: str | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """Run `command` through the node's sshd as root (a real SSH session, like the remote provider)."""
        result = subprocess.run(
            ["ssh", *self.lab.ssh_options(), f"root@{self.address}", command],
            capture_output=True, text=True, timeout=timeout, input=input,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"ssh {self.name}: {command[:200]!r} failed ({result.returncode}):\n{result.stderr.strip()}"
            )
        return result

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The node's own docker CLI, over SSH."""
        return self.ssh(" ".join(shlex.quote(a) for a in ("docker", *args)), check=check, timeout=timeout)

    def stop(self) -> None:
        self.lab.engine.run("stop", "-t", "10", self.container, timeout=60)

    def start(self) -> None:
        self.lab.engine.run("start", self.container)
        self.wait_ready()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                result = self.ssh("docker info --format '{{.ServerVersion}}'", check=False, timeout=10)
                if result.returncode == 0 and result.stdout.strip():
                    return
                last = result.stderr.strip()
            except subprocess.TimeoutExpired:
                last = "ssh timed out"
            time.sleep(0.5)
        logs = self.lab.engine.run("logs", "--tail", "30", self.container, check=False).stderr
        inner = self.lab.engine.run("exec", self.container, "tail", "-n", "30", "/var/log/dockerd.log", check=False)
        raise RuntimeError(
            f"node {self.name} not ready after {timeout}s: {last}\n{logs}\ninner dockerd:\n{inner.stdout}"
        )


@dataclass
class Lab:
    """Nodes on one bridge of `engine`. Use as a context manager, or call `close()`."""

    engine: Engine
    image: str
    subnet: IPv4Network
    workdir: Path
    prefix: str = "se"
    nodes: dict[str, Node] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.key = self.workdir / "id_ed25519"
        if not self.key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "swarm-estate-test",
                            "-f", str(self.key)], check=True, timeout=30)
        self.network = f"{self.prefix}-net"
        if self.engine.run("network", "inspect", self.network, check=False).returncode != 0:
            self.engine.run("network", "create", "--driver", "bridge", "--subnet", str(self.subnet),
                            "--gateway", str(self.subnet.network_address + 1), self.network)

    @property
    def public_key(self) -> str:
        return self.key.with_suffix(".pub").read_text().strip()

    def ssh_options(self) -> list[str]:
        return [
            "-i", str(self.key),
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no",
            "-o", f"UserKnownHostsFile={self.workdir / 'known_hosts'}",
            "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=5",
        ]

    def add_node(self, name: str, address: IPv4Address | str, *, publish_api: int | None = None,
                 wait: bool = True) -> Node:
        """Start one node container (`<prefix>-<name>`, hostname `name`) at a fixed address."""
        node = Node(self, name, IPv4Address(address))
        args = [
            "run", "-d", "--name", node.container, "--hostname", name,
            "--network", self.network, "--ip", str(node.address),
            *NODE_SECURITY_ARGS,
            "--tmpfs", "/run", "--tmpfs", "/tmp",
            "-v", f"{node.container}-docker:/var/lib/docker",
            "-e", f"NODE_AUTHORIZED_KEY={self.public_key}",
        ]
        if publish_api is not None:
            args += ["-p", f"127.0.0.1:{publish_api}:2375"]
        self.engine.run(*args, self.image)
        self.nodes[name] = node
        if wait:
            node.wait_ready()
        return node

    def add_nodes(self, names_and_addresses: list[tuple[str, str]]) -> list[Node]:
        """Start several nodes at once, then wait for all of them (they boot in parallel)."""
        nodes = [self.add_node(n, a, wait=False) for n, a in names_and_addresses]
        for node in nodes:
            node.wait_ready()
        return nodes

    def load_image(self, ref: str, nodes: list[Node] | None = None) -> None:
        """Copy an image of the outer engine into nodes (docker save | docker load, no registry)."""
        saved = self.workdir / "image.tar"
        self.engine.run("save", "-o", str(saved), ref, timeout=300)
        for node in nodes or list(self.nodes.values()):
            with saved.open("rb") as data:
                subprocess.run(["ssh", *self.ssh_options(), f"root@{node.address}", "docker load -q"],
                               stdin=data, check=True, capture_output=True, timeout=300)

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


def free_subnet(candidates: tuple[str, ...] = ("172.31.240.0/24", "172.31.241.0/24", "172.30.242.0/24",
                                               "10.251.240.0/24", "10.252.240.0/24")) -> IPv4Network:
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
