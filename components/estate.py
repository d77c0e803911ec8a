"""The top-level Estate component: wires hosts -> swarm -> networks -> L7/L4 -> stacks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi

from .config_secrets import SecretSource
from .dind import DockerNodes, DockerNodesArgs
from .hosts import Hosts, HostsArgs
from .l4 import L4Pair, L4PairArgs
from .l7 import L7, L7Args
from .machines import HostRecord, build_site
from .model import EstateSpec
from .prepare import Prepared
from .render.diagram import render_mermaid
from .stacks import AppStack, AppStackArgs
from .swarm import Cluster, ClusterArgs


@dataclass(frozen=True)
class MachineLayer:
    records: list[HostRecord]
    l4: L4Pair | None
    files: dict[str, str]


def merged(*parts: Mapping[str, str]) -> dict[str, str]:
    """The generated files of several components; one path with two contents is a bug, said at once."""
    out: dict[str, str] = {}
    for files in parts:
        for path, text in files.items():
            if path in out and out[path] != text:
                raise ValueError(f"two components generate {path} with different contents")
            out[path] = text
    return dict(sorted(out.items()))


def machine_layer(name: str, spec: EstateSpec, secrets: SecretSource, parent: pulumi.Resource | None) -> MachineLayer:
    """libvirt VMs or existing hosts over SSH for the swarm nodes, and the L4 pair in front when enabled: both on
    the same libvirt site (one provider, base image and network per hypervisor), reached with the same key."""
    if spec.substrate == "docker":
        return MachineLayer([], None, {})  # docker-in-docker nodes: components/dind.py
    assert spec.ssh.private_key_secret, "the model requires ssh.private_key_secret for this substrate"
    key = secrets.get(spec.ssh.private_key_secret)
    child = pulumi.ResourceOptions(parent=parent)
    site = build_site(spec, f"{name}-site", parent) if spec.substrate == "libvirt" else None
    hosts = Hosts(f"{name}-hosts", HostsArgs(spec=spec, private_key=key, site=site), child)
    l4 = None
    if spec.l4.enabled:
        l4 = L4Pair(f"{name}-l4", L4PairArgs(spec=spec, secrets=secrets, site=site, private_key=key), child)
    return MachineLayer(hosts.records, l4, merged(hosts.files, l4.files if l4 else {}))


@dataclass(frozen=True)
class EstateArgs:
    prepared: Prepared  # the validated model, the imported stacks and the routes (components/prepare.py)
    secrets: SecretSource


class Estate(pulumi.ComponentResource):
    manager_addresses: pulumi.Output[list[str]]
    public_urls: pulumi.Output[list[str]]
    l4_virtual_ip: pulumi.Output[str | None]
    l7_entrypoints: pulumi.Output[list[str]]
    l7_https_entrypoints: pulumi.Output[list[str]]
    health_urls: pulumi.Output[list[str]]

    def __init__(self, name: str, args: EstateArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("swarm-estate:estate:Estate", name, None, opts)
        spec = args.prepared.spec
        self.routes = args.prepared.routes
        child = pulumi.ResourceOptions(parent=self)
        machine_files: dict[str, str] = {}

        self.hosts: list[HostRecord] = []
        self.l7_entrypoints = pulumi.Output.from_input([])
        self.l7_https_entrypoints = pulumi.Output.from_input([])
        if spec.substrate == "docker":
            nodes = DockerNodes(f"{name}-nodes", DockerNodesArgs(spec=spec), child)
            self.hosts = nodes.records
            self.l7_entrypoints = nodes.l7_entrypoints
            self.l7_https_entrypoints = nodes.l7_https_entrypoints
        else:
            machines = machine_layer(name, spec, args.secrets, self)
            self.hosts, machine_files = machines.records, machines.files

        self.swarm = Cluster(f"{name}-swarm", ClusterArgs(spec=spec, hosts=self.hosts, secrets=args.secrets), child)
        on_swarm = pulumi.ResourceOptions(parent=self, depends_on=[self.swarm])
        self.l7 = L7(
            f"{name}-l7",
            L7Args(spec, self.routes, self.swarm.provider, self.swarm.public_network, args.secrets),
            on_swarm,
        )
        shared_networks = {spec.public_network.name: self.swarm.public_network, **self.swarm.overlays}
        self.stacks = {
            stack_name: AppStack(
                f"{name}-stack-{stack_name}",
                AppStackArgs(stack, self.swarm.provider, shared_networks, args.secrets),
                on_swarm,
            )
            for stack_name, stack in args.prepared.stacks.items()
        }

        # Every file the estate generates, as its hosts and services receive it: the synth writes them under files/.
        self.files = merged(
            {"estate.mmd": render_mermaid(spec, self.routes)},
            machine_files,
            self.l7.files,
            *(stack.files for stack in self.stacks.values()),
        )
        self.manager_addresses = pulumi.Output.from_input([str(n.address) for n in spec.managers])
        self.public_urls = pulumi.Output.from_input(
            sorted(f"https://{dns}/" for route in self.routes for dns in route.dns_names)
        )
        # What the smoke test checks besides the front pages (components/smoke.py).
        self.health_urls = pulumi.Output.from_input(
            sorted(
                f"https://{dns}{route.routing.check_uri}"
                for route in self.routes
                if route.routing.check_uri
                for dns in route.dns_names
            )
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
                "l7_https_entrypoints": self.l7_https_entrypoints,
                "health_urls": self.health_urls,
            }
        )
