"""The top-level Estate component: wires hosts -> swarm -> networks -> L7/L4 -> stacks."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from . import artifacts
from .diagram import render_mermaid
from .dind import DockerNodes, DockerNodesArgs
from .hosts import HostRecord
from .model import EstateSpec, Route
from .secrets import SecretSource


@dataclass(frozen=True)
class EstateArgs:
    spec: EstateSpec
    secrets: SecretSource
    routes: tuple[Route, ...] = ()


def provisional_routes(spec: EstateSpec) -> tuple[Route, ...]:
    """Routes from the stack config alone, for when no compose file has been read."""
    return tuple(
        Route(
            stack=stack,
            service=service,
            dns_names=tuple(routing.dns_names),
            port=routing.http_port or 80,
            replicas=routing.replicas or 1,
            routing=routing,
        )
        for stack, stack_spec in spec.stacks.items()
        for service, routing in stack_spec.services.items()
        if routing.dns_names
    )


class Estate(pulumi.ComponentResource):
    manager_addresses: pulumi.Output[list[str]]
    public_urls: pulumi.Output[list[str]]
    l4_virtual_ip: pulumi.Output[str | None]

    def __init__(self, name: str, args: EstateArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("swarm-estate:estate:Estate", name, None, opts)
        spec = args.spec
        routes = args.routes or provisional_routes(spec)
        artifacts.publish("estate.mmd", render_mermaid(spec, routes))
        child = pulumi.ResourceOptions(parent=self)

        self.hosts: list[HostRecord] = []
        self.l7_entrypoints: pulumi.Output[list[str]] = pulumi.Output.from_input([])
        if spec.substrate == "docker":
            nodes = DockerNodes(f"{name}-nodes", DockerNodesArgs(spec=spec), child)
            self.hosts = nodes.records
            self.l7_entrypoints = nodes.l7_entrypoints

        self.manager_addresses = pulumi.Output.from_input([str(n.address) for n in spec.managers])
        self.public_urls = pulumi.Output.from_input(
            sorted(f"https://{dns}/" for route in routes for dns in route.dns_names)
        )
        self.l4_virtual_ip = pulumi.Output.from_input(
            str(spec.l4.virtual_ip) if spec.l4.enabled and spec.l4.virtual_ip else None
        )
        self.register_outputs(
            {
                "manager_addresses": self.manager_addresses,
                "public_urls": self.public_urls,
                "l4_virtual_ip": self.l4_virtual_ip,
                "l7_entrypoints": self.l7_entrypoints,
            }
        )
