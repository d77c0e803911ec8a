"""Looking at a replayed estate from outside: requests through the L7 entry points, the swarm's
own view of nodes and tasks, and HAProxy's server states read from its stats frontend."""

from __future__ import annotations

import http.client
import re
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from tests.harness import Engine

from .api import DockerApi

REQUEST_TIMEOUT_S = 5


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    headers: dict[str, str]


def request(
    entrypoint: str, host: str, path: str = "/", cookie: str | None = None, own: IPv4Network | None = None
) -> Answer:
    """One request to `entrypoint` (http(s)://127.0.0.1:port, or an address of `own`, the test's own
    container network) with `Host: host`."""
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
        headers = {"Host": host, "Connection": "close"}
        if cookie:
            headers["Cookie"] = cookie
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return Answer(
            response.status, response.read().decode(errors="replace"), {k.lower(): v for k, v in response.getheaders()}
        )
    finally:
        conn.close()


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    every: float = 0.5,
    retry_on: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException, RuntimeError),
) -> Any:
    """The predicate's first truthy value within `timeout`; the errors in `retry_on` count as not yet."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except retry_on as exc:
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last})" if last else ""))


class Swarm:
    """The swarm's API (the docker provider's endpoint for it) and the node containers' engine."""

    def __init__(self, api: DockerApi, engine: Engine):
        self.api, self.engine = api, engine

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["Description"]["Hostname"]: n for n in self.api.get("/nodes")}

    def node_names(self) -> dict[str, str]:
        return {n["ID"]: n["Description"]["Hostname"] for n in self.api.get("/nodes")}

    def running_tasks(self, service: str) -> list[dict[str, Any]]:
        tasks = self.api.get("/tasks", filters=f'{{"service":["{service}"],"desired-state":["running"]}}')
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

    def node_docker(self, container: str, *args: str, timeout: float = 30) -> str:
        """The docker CLI of one node (docker exec into its container)."""
        result = subprocess.run(
            ["docker", "exec", container, "docker", *args],
            capture_output=True,
            text=True,
            env=self.engine.env(),
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} on {container}: {result.stderr.strip()}")
        return result.stdout


_STATUS = re.compile(r'^haproxy_server_status\{proxy="([^"]+)",server="([^"]+)",state="([A-Z_]+)"\} 1$', re.M)


def server_states(swarm: Swarm, node_container: str, port: int = 8404) -> dict[tuple[str, str], str]:
    """(backend, server) -> state, from the L7 task on that node (its Prometheus page on the stats port)."""
    ids = swarm.node_docker(node_container, "ps", "-q", "--filter", "label=com.docker.swarm.service.name=l7_haproxy")
    states: dict[tuple[str, str], str] = {}
    for cid in ids.split():
        metrics = swarm.node_docker(
            node_container, "exec", cid, "wget", "-q", "-O", "-", f"http://127.0.0.1:{port}/metrics"
        )
        states.update({(proxy, server): state for proxy, server, state in _STATUS.findall(metrics)})
    return states
