"""Stack configs for the real-engine tests: the repository's own stack files, with only what this machine
needs changed (its isolated engine, offline images, free loopback ports and a subnet no route uses).

`local_dev(engine, images)` is `Pulumi.dev.yaml` so changed; `changed_keys` lists what differs, and a test
asserts that list stays this short, so the tests keep exercising the real dev estate.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Any

from components.model import EstateSpec, load_estate
from tools.images import app_image, haproxy_image, image_id, node_image

from .engine import Engine
from .ports import free_ports
from .probe import Rotation, Swarm
from .project import estate_of
from .pulumi import PulumiStack


@dataclass(frozen=True)
class LocalImages:
    """Offline-built images tagged in the outer engine. The program loads the service images into the nodes
    (docker.preload_images, by tag); services name them by ID, since a tag makes each task try a registry
    pull first, which waits for name resolution to fail where there is no registry."""

    node: str
    haproxy: str
    app: str
    haproxy_id: str
    app_id: str

    @classmethod
    def build(cls, engine: Engine) -> LocalImages:
        haproxy, app = haproxy_image(engine), app_image(engine)
        return cls(
            node=node_image(engine),
            haproxy=haproxy,
            app=app,
            haproxy_id=image_id(engine, haproxy),
            app_id=image_id(engine, app),
        )


def local_dev(
    engine: Engine, images: LocalImages, subnet: IPv4Network, estate: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`estate` (the dev estate by default) on this machine's engine, images and ports; nothing else changes."""
    estate = copy.deepcopy(estate if estate is not None else estate_of("dev"))
    spec = load_estate(copy.deepcopy(estate))
    http, https = free_ports(2, consecutive=max(1, len(spec.l7_nodes())))
    estate["docker"].update(
        engine_host=engine.host,
        image=images.node,
        api_socket_dir=str(engine.root / "api"),  # goes with the engine
        l7_http_port=http,
        l7_https_port=https,
        preload_images=[images.haproxy, images.app],
    )
    estate["node_network"]["subnet"] = str(subnet)
    estate.setdefault("l7", {})["image"] = images.haproxy_id
    for stack in estate.get("stacks", {}).values():
        stack.setdefault("variables", {})["DEMO_IMAGE"] = images.app_id
    return estate


def changed_keys(before: Any, after: Any, path: str = "") -> list[str]:
    """Config paths whose values differ between two estates."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[str] = []
        for key in sorted(set(before) | set(after)):
            out += changed_keys(before.get(key), after.get(key), f"{path}.{key}" if path else str(key))
        return out
    return [] if before == after else [path]


@dataclass
class LocalEstate:
    """A local dev estate under the real engine: its isolated engine, images, Pulumi stack and the config applied
    (local overrides included), with the swarm as Docker reports it."""

    engine: Engine
    images: LocalImages
    stack: PulumiStack
    estate: dict[str, Any]
    swarm: Swarm = field(init=False)

    def __post_init__(self) -> None:
        self.swarm = Swarm.in_containers(self.engine, self.container(self.spec.managers[0].name), self.container)

    @property
    def spec(self) -> EstateSpec:
        return load_estate(copy.deepcopy(self.estate))

    def container(self, node: str) -> str:
        return f"{self.spec.name}-{node}"

    def configure(self, estate: dict[str, Any]) -> None:
        """The stack's config becomes `estate` (no `up`)."""
        self.stack.set_config({"swarm-estate:estate": estate})
        self.estate = estate

    def outputs(self) -> dict[str, Any]:
        return self.stack.outputs()

    @property
    def entrypoints(self) -> list[str]:
        return list(self.outputs()["l7_https_entrypoints"])

    def service(self, name: str) -> dict[str, Any]:
        return self.swarm.service(name)

    def rotation(self, backend: str = "demo_web") -> Rotation:
        """The L7s' view of one backend, node by node (HAProxy's own metrics)."""
        return Rotation(self.swarm, [n.name for n in self.spec.l7_nodes()], backend)
