"""Two branch stacks' node containers, networks and volumes side by side on one real Docker engine.

The synth of each branch stack says what it would create on the shared engine; this replays
exactly those names, subnets, fixed addresses, volumes and loopback-published ports with the
real Docker CLI (busybox httpd stands in for the docker-in-docker node image, which cannot be
pulled here), checks every published port answers from its own branch's container, then
removes one branch and checks the other is untouched and nothing of the first is left.
It is not the swarm-level side-by-side replay, which needs the dev-replay harness.
"""

from __future__ import annotations

import copy
import socket
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from components.branch import derive_branch_estate, stack_name
from components.synth import SynthResult, run_program
from tests.conftest import config_for, estate_of
from tests.harness import Engine, busybox_image

pytestmark = pytest.mark.slow

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
BRANCHES = ("feature/login", "fix/ünïcode-bug")
NETWORK = "docker:index/network:Network"
VOLUME = "docker:index/volume:Volume"
CONTAINER = "docker:index/container:Container"


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    eng = Engine.start()
    try:
        yield eng
    finally:
        eng.stop()


def _free(port: int) -> bool:
    """Nobody listens there (connections of the test itself may linger in TIME_WAIT)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _synths() -> list[SynthResult]:
    """Both branch stacks, on a port range nothing on this machine is using."""
    for base in range(20000, 60000, 1000):
        template = copy.deepcopy(estate_of("ci"))
        template["branch"]["port_base"] = base
        results = []
        for branch in BRANCHES:
            stack = stack_name(branch)
            results.append(run_program(config_for(derive_branch_estate(template, stack, now=NOW)), stack=stack))
        ports = [p["external"] for r in results for c in r.by_type(CONTAINER) for p in c["inputs"].get("ports", [])]
        if all(_free(p) for p in ports):
            return results
    raise RuntimeError("no free loopback port range for the two branch stacks")


def _on_nodes_engine(result: SynthResult, type_: str) -> list[dict[str, Any]]:
    """The node substrate's objects; the swarm's overlays and services live on the nodes' own engines."""
    return [r for r in result.by_type(type_) if (r["parent"] or "").endswith("-nodes")]


def _create(engine: Engine, result: SynthResult, image: str) -> list[tuple[int, str]]:
    """What DockerNodes would create, by the synth's own inputs; returns (published port, container)."""
    for net in _on_nodes_engine(result, NETWORK):
        (ipam,) = net["inputs"]["ipamConfigs"]
        engine.run(
            "network", "create", "--driver", net["inputs"]["driver"],
            "--subnet", ipam["subnet"], "--gateway", ipam["gateway"], net["inputs"]["name"],
        )  # fmt: skip
    for vol in result.by_type(VOLUME):
        engine.run("volume", "create", vol["inputs"]["name"])
    published = []
    for container in result.by_type(CONTAINER):
        inputs: dict[str, Any] = container["inputs"]
        name = inputs["name"]
        (attachment,) = inputs["networksAdvanced"]
        args = ["run", "-d", "--name", name, "--hostname", inputs["hostname"]]
        args += ["--network", attachment["name"], "--ip", attachment["ipv4Address"]]
        for volume in inputs.get("volumes", []):
            args += ["-v", f"{volume['volumeName']}:{volume['containerPath']}"]
        inner = []
        for port in inputs.get("ports", []):
            args += ["-p", f"{port['ip']}:{port['external']}:{port['internal']}"]
            inner.append(str(port["internal"]))
            published.append((port["external"], name))
        serve = " ".join(f"httpd -p {p} -h /www;" for p in inner)
        script = f"mkdir -p /www && echo {name} > /www/index.html && {serve} exec sleep 100000"
        engine.run(*args, image, "sh", "-c", script)
    return published


def _answer(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return response.read().decode().strip()


def _names(engine: Engine, kind: str) -> set[str]:
    fmt = "{{.Names}}" if kind == "ps" else "{{.Name}}"
    args = ["ps", "-a", "--format", fmt] if kind == "ps" else [kind, "ls", "--format", fmt]
    return set(engine.run(*args).stdout.split())


def test_two_branch_stacks_coexist_on_one_engine_and_one_goes_cleanly(engine: Engine) -> None:
    image = busybox_image(engine)
    first, second = _synths()
    published = _create(engine, first, image) + _create(engine, second, image)
    assert len(published) == 6, published  # API + L7 HTTP + L7 HTTPS, per branch
    for port, container in published:
        assert _answer(port) == container, f"127.0.0.1:{port} does not reach {container}"

    # Destroy the first branch the way `pulumi destroy` would: containers, then volumes and network.
    mine = {r["inputs"]["name"] for t in (NETWORK, VOLUME, CONTAINER) for r in _on_nodes_engine(first, t)}
    engine.run("rm", "-f", *(c["inputs"]["name"] for c in first.by_type(CONTAINER)))
    engine.run("volume", "rm", *(v["inputs"]["name"] for v in first.by_type(VOLUME)))
    engine.run("network", "rm", *(n["inputs"]["name"] for n in _on_nodes_engine(first, NETWORK)))
    left = _names(engine, "ps") | _names(engine, "volume") | _names(engine, "network")
    assert not mine & left, f"left behind: {mine & left}"
    for port, container in published:
        if any(c["inputs"]["name"] == container for c in second.by_type(CONTAINER)):
            assert _answer(port) == container, "removing one branch must not disturb the other"
        else:
            assert _free(port), f"127.0.0.1:{port} is still held after its branch went"
