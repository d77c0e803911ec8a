"""Looking at a running estate from outside: requests through its entry points, the swarm's own view of
nodes, services and tasks (the docker CLI of a manager), and HAProxy's server states from its stats page.

Every wait is a bounded wait on the condition itself (`wait_until`), never a sleep: on a loaded machine a
condition may take longer, never a different path.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from .engine import Engine
from .wait import wait_until

REQUEST_TIMEOUT_S = 5


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    headers: dict[str, str]


def request(
    entrypoint: str,
    host: str,
    path: str = "/",
    cookie: str | None = None,
    own: IPv4Network | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request to `entrypoint` (http(s)://127.0.0.1:port, or an address of `own`, the test's own network)
    with `Host: host` (and that server name for TLS)."""
    url = urllib.parse.urlparse(entrypoint)
    target = IPv4Address(url.hostname or "")
    assert target.is_loopback or (own is not None and target in own), f"not loopback or our own: {entrypoint}"
    if url.scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the estate's self-signed certificate
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            str(target), url.port, timeout=REQUEST_TIMEOUT_S, context=context
        )
    else:
        conn = http.client.HTTPConnection(str(target), url.port, timeout=REQUEST_TIMEOUT_S)
    try:
        sent = {"Host": host, "Connection": "close", **(headers or {})}
        if cookie:
            sent["Cookie"] = cookie
        conn.request("GET", path, headers=sent)
        response = conn.getresponse()
        return Answer(
            response.status, response.read().decode(errors="replace"), {k.lower(): v for k, v in response.getheaders()}
        )
    finally:
        conn.close()


def task_time(task: dict[str, Any]) -> float:
    """The swarm's timestamp of a task's current state, as a wall-clock epoch."""
    stamp = task["Status"]["Timestamp"].rstrip("Z")
    whole, _, frac = stamp.partition(".")
    return datetime.fromisoformat(f"{whole}.{(frac + '000000')[:6]}+00:00").timestamp()


DockerRun = Callable[[Sequence[str], float], str]


class Swarm:
    """The swarm as a manager's docker CLI sees it. `run(args, timeout)` runs `docker <args>` on that manager
    (through `docker exec` into a docker-substrate node, or over SSH) and returns stdout; `node_run(node, …)`
    does the same on any node."""

    def __init__(self, run: DockerRun, node_run: Callable[[str, Sequence[str], float], str]):
        self._run, self._node_run = run, node_run

    @classmethod
    def in_containers(cls, engine: Engine, manager_container: str, container_of: Callable[[str], str]) -> Swarm:
        """Docker-substrate nodes: every node is a container of `engine`."""

        def node_run(node: str, args: Sequence[str], timeout: float) -> str:
            return _docker_exec(engine, container_of(node), args, timeout)

        return cls(lambda args, timeout: _docker_exec(engine, manager_container, args, timeout), node_run)

    def docker(self, *args: str, timeout: float = 60) -> str:
        return self._run(args, timeout)

    def node_docker(self, node: str, *args: str, timeout: float = 60) -> str:
        return self._node_run(node, args, timeout)

    def _inspect(self, *args: str) -> list[dict[str, Any]]:
        out = self.docker(*args, "--format", "{{json .}}")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def nodes(self) -> dict[str, dict[str, Any]]:
        ids = self.docker("node", "ls", "-q").split()
        return {n["Description"]["Hostname"]: n for n in self._inspect("node", "inspect", *ids)} if ids else {}

    def node_names(self) -> dict[str, str]:
        return {i: n for n, node in self.nodes().items() for i in [node["ID"]]}

    def service(self, name: str) -> dict[str, Any]:
        return self._inspect("service", "inspect", name)[0]

    def services(self) -> list[str]:
        return sorted(self.docker("service", "ls", "--format", "{{.Name}}").split())

    def running_tasks(self, service: str) -> list[dict[str, Any]]:
        ids = self.docker("service", "ps", "-q", "--filter", "desired-state=running", service).split()
        tasks = self._inspect("inspect", *ids) if ids else []
        return [t for t in tasks if t["Status"]["State"] == "running"]

    def task_nodes(self, service: str) -> list[str]:
        names = self.node_names()
        return sorted(names[t["NodeID"]] for t in self.running_tasks(service))

    def replicas_by_hostname(self, service: str) -> dict[str, str]:
        """Task container hostname (its short id) -> node name."""
        names = self.node_names()
        return {
            t["Status"]["ContainerStatus"]["ContainerID"][:12]: names[t["NodeID"]] for t in self.running_tasks(service)
        }

    def scale(self, service: str, replicas: int) -> None:
        self.docker("service", "scale", "--detach", f"{service}={replicas}")

    def set_availability(self, node: str, availability: str) -> None:
        self.docker("node", "update", "--availability", availability, node)


def _docker_exec(engine: Engine, container: str, args: Sequence[str], timeout: float) -> str:
    result = subprocess.run(
        ["docker", "exec", container, "docker", *args],
        capture_output=True,
        text=True,
        env=engine.env(),
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} on {container}: {result.stderr.strip()}")
    return result.stdout


_STATUS = re.compile(r'^haproxy_server_status\{proxy="([^"]+)",server="([^"]+)",state="([A-Z_]+)"\} 1$', re.M)


class Rotation:
    """How many servers of a backend each L7 HAProxy has UP, read from its own Prometheus page."""

    def __init__(
        self,
        swarm: Swarm,
        l7_nodes: Sequence[str],
        backend: str,
        l7_service: str = "l7_haproxy",
        stats_port: int = 8404,
    ):
        self.swarm, self.nodes, self.backend = swarm, list(l7_nodes), backend
        self.l7_service, self.stats_port = l7_service, stats_port
        self._tasks: dict[str, str] = {}

    def metrics(self, node: str) -> str:
        for _ in range(2):
            task = (
                self._tasks.get(node)
                or self.swarm.node_docker(
                    node, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={self.l7_service}"
                ).split()[0]
            )
            try:
                out = self.swarm.node_docker(
                    node,
                    "exec",
                    task,
                    "wget",
                    "-q",
                    "-O",
                    "-",
                    f"http://127.0.0.1:{self.stats_port}/metrics",
                    timeout=10,
                )
                self._tasks[node] = task
                return out
            except RuntimeError:
                self._tasks.pop(node, None)  # the L7 task was replaced: look it up again
        raise RuntimeError(f"no metrics from the L7 task on {node}")

    def states(self, node: str) -> dict[str, str]:
        """server -> state of this backend on one node's L7."""
        return {s: st for p, s, st in _STATUS.findall(self.metrics(node)) if p == self.backend}

    def up(self) -> dict[str, int]:
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            pages = dict(zip(self.nodes, pool.map(self.states, self.nodes), strict=True))
        return {n: sum(1 for st in states.values() if st == "UP") for n, states in pages.items()}

    def wait(self, predicate: Callable[[dict[str, int]], bool], timeout: float, what: str) -> float:
        """Wall-clock time at which `predicate(up counts)` was first seen true."""

        def seen() -> float | None:
            counts = self.up()
            return time.time() if predicate(counts) else None

        return wait_until(seen, timeout, what, every=0.05, retry_on=(Exception,))
