"""The dev estate made replayable on this machine: local images, free ports, an isolated engine.

`dev_config(engine, images)` is `Pulumi.dev.yaml` with only what this machine needs changed
(listed in `local_overrides`); `preload_hook(...)` loads the service images into each node as
soon as its engine answers, before the swarm layer schedules anything on it.
"""

from __future__ import annotations

import copy
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.dind import container_name
from components.model import load_estate
from tests.conftest import config_for, estate_of
from tests.harness import Engine, node_image

from .engine import Created, Hook
from .images import app_image, haproxy_image, image_id

LOAD_TIMEOUT_S = 180


@dataclass(frozen=True)
class LocalImages:
    node: str  # tag in the outer engine (the docker provider's RemoteImage finds it locally)
    haproxy: str  # image IDs: services named by ID never try a registry pull
    app: str
    tarball: Path  # haproxy + app, saved once, loaded into every node


def local_images(engine: Engine, workdir: Path) -> LocalImages:
    haproxy, app = haproxy_image(engine), app_image(engine)
    workdir.mkdir(parents=True, exist_ok=True)
    tarball = workdir / "service-images.tar"
    engine.run("save", "-o", str(tarball), haproxy, app, timeout=300)
    return LocalImages(node_image(engine), image_id(engine, haproxy), image_id(engine, app), tarball)


def free_ports(count: int, consecutive: int = 1) -> list[int]:
    """`count` port ranges of `consecutive` ports, each free on 127.0.0.1 now (first port of each)."""
    found: list[int] = []
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            start = s.getsockname()[1]
        if start + consecutive > 65535 or any(abs(start - f) < consecutive + 1 for f in found):
            continue
        try:
            for port in range(start, start + consecutive):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        found.append(start)
        if len(found) == count:
            return found
    raise RuntimeError("no free loopback ports")


def local_overrides(estate: dict[str, Any], engine: Engine, images: LocalImages, subnet: str) -> dict[str, Any]:
    """The stack config with this machine's engine, images and free ports; nothing else changes."""
    estate = copy.deepcopy(estate)
    spec = load_estate(copy.deepcopy(estate))
    l7_nodes = len(spec.l7_nodes())
    api, http, https = free_ports(3, consecutive=max(1, l7_nodes))
    estate["docker"].update(engine_host=engine.host, image=images.node, privileged=False, api_port=api,
                            l7_http_port=http, l7_https_port=https)
    estate["node_network"]["subnet"] = subnet
    estate.setdefault("l7", {})["image"] = images.haproxy
    for stack in estate.get("stacks", {}).values():
        stack.setdefault("variables", {})["DEMO_IMAGE"] = images.app
    return estate


def dev_config(
    engine: Engine, images: LocalImages, subnet: str, estate: dict[str, Any] | None = None
) -> dict[str, Any]:
    return config_for(local_overrides(estate or estate_of("dev"), engine, images, subnet))


def preload_hook(engine: Engine, images: LocalImages, estate: dict[str, Any]) -> Hook:
    """After each node's readiness command: `docker save | docker exec -i <node> docker load`."""
    spec = load_estate(copy.deepcopy(estate))
    ready = {f"{spec.name}-nodes-{node.name}-ready": container_name(spec, node) for node in spec.nodes}

    def load(record: Created) -> None:
        container = ready.get(record.name)
        if container is None:
            return
        with images.tarball.open("rb") as data:
            result = subprocess.run(["docker", "exec", "-i", container, "docker", "load", "-q"], stdin=data,
                                    capture_output=True, env=engine.env(), timeout=LOAD_TIMEOUT_S)
        if result.returncode != 0:
            raise RuntimeError(f"loading the service images into {container} failed: {result.stderr.decode()}")

    return load


def existing_estate(dev: dict[str, Any], images: LocalImages, subnet: str, nodes: dict[str, str]) -> dict[str, Any]:
    """The dev estate's swarm, L7 and stacks on existing hosts (`nodes`: name -> address, first one
    the manager, the others L7-labelled workers) reached over SSH as root with a preinstalled engine."""
    manager, *workers = nodes.items()
    estate = {
        "name": "existing",
        "domain": dev["domain"],
        "substrate": "existing",
        "node_network": {"name": "lab", "subnet": subnet},
        "ssh": {"user": "root", "private_key_secret": "sshPrivateKey"},
        "engine": {"install": "preinstalled"},
        "swarm": {
            "managers": {"count": 1, "nodes": [{"name": manager[0], "address": manager[1]}]},
            "workers": {"count": len(workers), "labels": ["l7=true"],
                        "nodes": [{"name": n, "address": a} for n, a in workers]},
        },
        "public_network": copy.deepcopy(dev["public_network"]),
        "l7": {**copy.deepcopy(dev["l7"]), "image": images.haproxy},
        "stacks": copy.deepcopy(dev["stacks"]),
    }
    for stack in estate["stacks"].values():
        stack.setdefault("variables", {})["DEMO_IMAGE"] = images.app
    return estate


def branch_template(engine: Engine, images: LocalImages) -> dict[str, Any]:
    """`Pulumi.ci.yaml` (the branch template) on this machine's engine and images. Names, subnets and
    ports stay the template's business: the program derives them from each branch stack's name."""
    raw = estate_of("ci")
    raw["docker"].update(engine_host=engine.host, image=images.node, privileged=False)
    raw.setdefault("l7", {})["image"] = images.haproxy
    for stack in raw.get("stacks", {}).values():
        stack.setdefault("variables", {})["DEMO_IMAGE"] = images.app
    return raw
