"""The root of the estate model and the rules that span several of its parts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Literal

from pydantic import Field, PrivateAttr, model_validator

from ..units import duration_ms
from .base import DnsName, Name, Strict, Violation, config_path, duplicate_items, raise_if_any
from .branch import BranchSettings, template_rules
from .hosts import (
    Availability,
    BaseImage,
    DockerSubstrate,
    EngineSettings,
    Hypervisor,
    NfsSpec,
    NodeNetwork,
    Role,
    SshAccess,
    SwarmSpec,
)
from .ports import HostPort, host_ports, port_violations, tcp_routes
from .proxy import L4Spec, L7Spec, Overlay, _public_network
from .stacks import PortainerSpec, RegistrySpec, StackSpec, TcpRoute

Substrate = Literal["libvirt", "existing", "docker"]

# Address slots inside the node subnet. Fixed offsets keep allocation stable: adding a worker
# takes the next free slot and never renumbers an existing node.
MANAGER_OFFSET = 10
WORKER_OFFSET = 20
MAX_MANAGERS = 7
# Node lists share one namespace (host names) across the groups: _check_names_and_addresses covers them.
_NODE_LISTS = frozenset({("swarm", "managers", "nodes"), ("swarm", "workers", "nodes"), ("l4", "nodes")})
@dataclass(frozen=True)
class Node:
    """A swarm node as every layer sees it, whatever the substrate."""

    name: str
    role: Role
    index: int
    address: IPv4Address
    hypervisor: str | None
    vcpu: int
    memory_mib: int
    disk_gib: int
    labels: dict[str, str] = field(default_factory=dict)
    availability: Availability = "active"
    ssh_user: str = "ops"
    path: tuple[str | int, ...] = ()


class EstateSpec(Strict):
    """The whole estate, as read from the stack config key `swarm-estate:estate`."""

    name: Name = Field(description="estate name; prefixes VM, container, network and volume names")
    domain: DnsName = Field(description="public domain; routed names outside it need an _acme-challenge CNAME")
    substrate: Substrate = Field(description="libvirt VMs, existing hosts over SSH, or docker-in-docker nodes")
    protect: bool = Field(default=False, description="protect VMs, disks and data volumes from deletion (production)")
    hypervisors: list[Hypervisor] = Field(default_factory=list, description="KVM hosts (libvirt substrate)")
    node_network: NodeNetwork = Field(description="network the nodes and the L4 pair sit on")
    base_image: BaseImage = Field(default_factory=BaseImage, description="cloud image the VMs boot from")
    ssh: SshAccess = Field(default_factory=SshAccess, description="ops user and keys")
    engine: EngineSettings = Field(default_factory=EngineSettings, description="Docker engine settings")
    docker: DockerSubstrate = Field(default_factory=DockerSubstrate, description="docker substrate settings")
    swarm: SwarmSpec = Field(default_factory=SwarmSpec, description="managers, workers and swarm settings")
    nfs: NfsSpec = Field(default_factory=NfsSpec, description="NFS exports and host mounts")
    registry: RegistrySpec = Field(default_factory=RegistrySpec, description="private image registry")
    portainer: PortainerSpec = Field(default_factory=PortainerSpec, description="Portainer")
    public_network: Overlay = Field(default_factory=_public_network, description="the haproxy-public overlay")
    overlays: list[Overlay] = Field(default_factory=list, description="other shared overlays")
    l7: L7Spec = Field(default_factory=L7Spec, description="L7 HAProxy service inside the swarm")
    l4: L4Spec = Field(default_factory=L4Spec, description="L4 HAProxy + keepalived pair in front")
    stacks: dict[Name, StackSpec] = Field(default_factory=dict, description="application stacks")
    branch: BranchSettings | None = Field(
        default=None, description="makes this a branch template: see components/model/branch.py and Pulumi.ci.yaml"
    )

    _nodes: list[Node] = PrivateAttr(default_factory=list)
    _warnings: list[Violation] = PrivateAttr(default_factory=list)

    @property
    def nodes(self) -> list[Node]:
        return self._nodes

    @property
    def warnings(self) -> list[Violation]:
        return self._warnings

    @property
    def managers(self) -> list[Node]:
        return [n for n in self._nodes if n.role == "manager"]

    @property
    def workers(self) -> list[Node]:
        return [n for n in self._nodes if n.role == "worker"]

    @property
    def engine_log_driver(self) -> str:
        """The log driver a service gets when it names none: the engines' default. Hosts get `engine.log_driver`
        in daemon.json; docker-in-docker nodes run dockerd without one, so its built-in json-file."""
        return "json-file" if self.substrate == "docker" else self.engine.log_driver

    def l7_nodes(self) -> list[Node]:
        return [n for n in self._nodes if _has_labels(n.labels, self.l7.node_label)]

    def nfs_export(self, name: str):  # -> NfsExport
        return next(e for e in self.nfs.exports if e.name == name)

    # --- the cross-field rules ---------------------------------------------------------

    @model_validator(mode="after")
    def _check(self) -> EstateSpec:
        errors: list[Violation] = []
        warnings: list[Violation] = []
        errors += self._check_substrate()
        errors += _check_manager_count(self.swarm.managers.size)
        nodes, placement_errors = self._resolve_nodes()
        errors += placement_errors
        if not placement_errors:
            self._nodes = nodes
            errors += self._check_names_and_addresses()
            spread_errors, spread_warnings = self._check_manager_spread()
            errors += spread_errors
            warnings += spread_warnings
            errors += self._check_l7_nodes()
            errors += template_rules(self)
        errors += duplicate_items(self, skip=_NODE_LISTS)  # nodes: one namespace across groups, checked above
        errors += self._check_references()
        errors += port_violations(self)
        errors += self._check_dns_names()
        errors += self._check_admin_exposure()
        warnings += self._check_l7_update_delay()
        raise_if_any(errors)
        self._warnings = warnings
        return self

    def _check_substrate(self) -> list[Violation]:
        out = []
        if self.substrate == "libvirt":
            if not self.hypervisors:
                out.append(Violation(("hypervisors",), "the libvirt substrate needs at least one hypervisor"))
            if self.base_image.url is None and self.base_image.volume is None:
                out.append(Violation(("base_image",), "give the base image a url or an existing volume"))
            if len(self.hypervisors) > 1 and self.node_network.mode == "nat":
                out.append(
                    Violation(
                        ("node_network", "mode"),
                        "a NAT network is private to one hypervisor, so nodes on different hypervisors could "
                        "not reach each other; use mode bridge (or existing) with several hypervisors",
                    )
                )
        if self.substrate in ("libvirt", "existing") and self.ssh.private_key_secret is None:
            out.append(
                Violation(
                    ("ssh", "private_key_secret"),
                    f"the {self.substrate} substrate runs its commands over SSH: name the secret config key "
                    "that holds the private key",
                )
            )
        if self.substrate == "existing":
            for role, group in (("managers", self.swarm.managers), ("workers", self.swarm.workers)):
                if group.count is not None and group.count != len(group.nodes):
                    out.append(
                        Violation(
                            ("swarm", role, "count"),
                            "existing hosts cannot be generated from a count: list each host under nodes",
                        )
                    )
                for i, spec in enumerate(group.nodes):
                    if spec.address is None:
                        out.append(
                            Violation(("swarm", role, "nodes", i, "address"), "an existing host needs its address")
                        )
        return out

    def _resolve_nodes(self) -> tuple[list[Node], list[Violation]]:
        nodes: list[Node] = []
        errors: list[Violation] = []
        hypervisor_names = [h.name for h in self.hypervisors]
        subnet = self.node_network.subnet
        for role, key, group, offset in (
            ("manager", "managers", self.swarm.managers, MANAGER_OFFSET),
            ("worker", "workers", self.swarm.workers, WORKER_OFFSET),
        ):
            candidates = group.hypervisors or hypervisor_names
            for i in range(group.size):
                spec = group.nodes[i] if i < len(group.nodes) else None
                path: tuple[str | int, ...] = ("swarm", key, "nodes", i) if spec else ("swarm", key, "count")
                address = spec.address if spec and spec.address else None
                if address is None:
                    address = self.node_network.subnet.network_address + offset + i
                    if role == "manager" and i >= MAX_MANAGERS:
                        address = None  # the manager-count rule reports this
                    elif address not in subnet or address == subnet.broadcast_address:
                        errors.append(
                            Violation(
                                path,
                                f"no address left for {key} #{i + 1} in {self.node_network.subnet}: "
                                "use a larger subnet or give addresses explicitly",
                            )
                        )
                        continue
                if address is None:
                    continue
                hypervisor = spec.hypervisor if spec and spec.hypervisor else None
                if hypervisor is None and self.substrate == "libvirt" and candidates:
                    hypervisor = candidates[i % len(candidates)]
                nodes.append(
                    Node(
                        name=spec.name if spec else f"{group.name_prefix or role}{i + 1}",
                        role=role,  # type: ignore[arg-type]
                        index=i,
                        address=address,
                        hypervisor=hypervisor,
                        vcpu=(spec.vcpu if spec and spec.vcpu else group.vcpu),
                        memory_mib=(spec.memory_mib if spec and spec.memory_mib else group.memory_mib),
                        disk_gib=(spec.disk_gib if spec and spec.disk_gib else group.disk_gib),
                        labels={**group.labels, **(spec.labels if spec else {})},
                        availability=(spec.availability if spec and spec.availability else group.availability),
                        ssh_user=(spec.ssh_user if spec and spec.ssh_user else self.ssh.user),
                        path=path,
                    )
                )
        return nodes, errors

    def _check_names_and_addresses(self) -> list[Violation]:
        out = []
        subnet = self.node_network.subnet
        reserved = {subnet.network_address, subnet.broadcast_address, self.node_network.effective_gateway()}
        entries: list[tuple[str, IPv4Address, tuple[str | int, ...]]] = [
            (n.name, n.address, n.path) for n in self._nodes
        ]
        generated = {n.name: f"{n.role} #{n.index + 1} of {config_path(n.path)}" for n in self._nodes
                     if n.path[-1] == "count"}  # fmt: skip
        if self.l4.enabled:
            entries += [(n.name, n.address, ("l4", "nodes", i)) for i, n in enumerate(self.l4.nodes)]
            if self.l4.virtual_ip is not None:
                entries.append(("the L4 virtual IP", self.l4.virtual_ip, ("l4", "virtual_ip")))
        first_named: dict[str, tuple[str | int, ...]] = {}
        addresses = Counter(addr for _, addr, _ in entries)
        for name, addr, path in entries:
            other = first_named.setdefault(name, path)
            if other != path:
                holder = generated.get(name) if other[-1] == "count" else config_path(other)
                out.append(Violation(path, f"node name {name!r} is also the name of {holder}: a host "
                                     "name (and a swarm node name) belongs to one node"))
            if addresses[addr] > 1:
                holders = sorted({n for n, a, _ in entries if a == addr})
                out.append(Violation(path, f"address {addr} is given to more than one of: {', '.join(holders)}"))
            if addr not in subnet:
                out.append(Violation(path, f"address {addr} of {name} is outside the node subnet {subnet}"))
            elif addr in reserved:
                out.append(Violation(path, f"address {addr} of {name} is the subnet's network, broadcast or gateway"))
        return out

    def _check_manager_spread(self) -> tuple[list[Violation], list[Violation]]:
        """Losing one hypervisor must not lose quorum, when the hypervisor count allows it.

        An avoidable bad spread (pinning) is an error; an unavoidable one (3 managers on 2
        hypervisors) is a warning that says what to add.
        """
        managers = self.managers
        hosts = {n.hypervisor for n in managers if n.hypervisor}
        if self.substrate != "libvirt" or len(self.hypervisors) < 2 or not managers:
            return [], []
        usable = len(self.swarm.managers.hypervisors or self.hypervisors)
        count = len(managers)
        tolerated = (count - 1) // 2
        worst = max(Counter(n.hypervisor for n in managers).values())
        best_possible = -(-count // usable)  # ceil: the most even spread
        path = ("swarm", "managers")
        if worst > best_possible:
            return [
                Violation(
                    path,
                    f"{worst} of {count} managers sit on one hypervisor although {usable} are available; "
                    f"spread them (at most {best_possible} per hypervisor)",
                )
            ], []
        if worst > tolerated:
            listed = len(self.swarm.managers.hypervisors or [])
            if listed and listed < len(self.hypervisors):
                fix = (f"list more of the {len(self.hypervisors)} hypervisors under swarm.managers.hypervisors "
                       f"(it names {listed})")  # fmt: skip
            else:
                fix = "add a hypervisor"
            return [], [
                Violation(
                    path,
                    f"losing the hypervisor that runs {worst} of the {count} managers loses quorum "
                    f"(managers are on {len(hosts)} hypervisors); {fix} so each runs at most {tolerated}",
                )
            ]
        return [], []

    def _check_l7_nodes(self) -> list[Violation]:
        """The L7 runs one task per labelled node; a drained or paused node takes no new task."""
        labelled = self.l7_nodes()
        active = [n for n in labelled if n.availability == "active"]
        ((key, value),) = self.l7.node_label.items()
        if len(active) >= self.l7.replicas:
            return []
        idle = [f"{n.name} ({n.availability})" for n in labelled if n.availability != "active"]
        but = f"{len(labelled)} are" + (f", and {', '.join(idle)} take no tasks" if idle else "")
        return [
            Violation(
                ("l7", "replicas"),
                f"{self.l7.replicas} L7 replicas need {self.l7.replicas} active nodes labelled {key}={value} "
                f"(one per node: its ports are published in host mode), but {but}: lower l7.replicas or label "
                "more active nodes",
            )
        ]

    def _check_references(self) -> list[Violation]:
        out = []
        hypervisors = {h.name for h in self.hypervisors}
        exports = {e.name for e in self.nfs.exports}

        def need(kind: str, name: str | None, known: set[str], path: tuple[str | int, ...]) -> None:
            if name is not None and name not in known:
                choices = ", ".join(sorted(known)) or "none are defined"
                out.append(Violation(path, f"{kind} {name!r} does not exist (known: {choices})"))

        for key, group in (("managers", self.swarm.managers), ("workers", self.swarm.workers)):
            for i, h in enumerate(group.hypervisors or []):
                need("hypervisor", h, hypervisors, ("swarm", key, "hypervisors", i))
            for i, spec in enumerate(group.nodes):
                need("hypervisor", spec.hypervisor, hypervisors, ("swarm", key, "nodes", i, "hypervisor"))
        for i, l4 in enumerate(self.l4.nodes):
            need("hypervisor", l4.hypervisor, hypervisors, ("l4", "nodes", i, "hypervisor"))
        for i, h in enumerate(self.hypervisors):
            if self.node_network.mode != "existing":
                need("network", h.network, {self.node_network.name}, ("hypervisors", i, "network"))
        for i, mount in enumerate(self.nfs.mounts):
            need("NFS export", mount.export, exports, ("nfs", "mounts", i, "export"))
        for stack, spec in self.stacks.items():
            for vol, volume in spec.volumes.items():
                need("NFS export", volume.nfs, exports, ("stacks", stack, "volumes", vol, "nfs"))
        need("NFS export", self.registry.nfs, exports, ("registry", "nfs"))
        need("NFS export", self.portainer.nfs, exports, ("portainer", "nfs"))
        for i, o in enumerate(self.overlays):
            if o.name == self.public_network.name:
                out.append(Violation(("overlays", i, "name"), f"{o.name} is the public network (public_network)"))
        return out

    def host_ports(self) -> list[HostPort]:
        """Every port the estate itself holds on the swarm nodes (see `ports.host_ports`)."""
        return host_ports(self)

    def tcp_routes(self) -> list[tuple[str, str, int, TcpRoute]]:
        """(stack, service, index, route) of every TCP port the stack config routes through the L7."""
        return tcp_routes(self)

    def _check_admin_exposure(self) -> list[Violation]:
        """The platform UIs are internal unless made public: an internal one needs the operators' networks."""
        if self.l7.operator_networks:
            return []
        out = []
        what = {"portainer": "Portainer controls the whole swarm through the engine socket, so it answers",
                "registry": "the registry takes pushes (images every node will run)"}  # fmt: skip
        for name in ("portainer", "registry"):
            platform = getattr(self, name)
            if platform.enabled and not platform.public:
                rule = (f"{what[name]} only from the operators' networks: list them in l7.operator_networks, or "
                        "set public: true to open it to every client")
                out.append(Violation((name, "public"), rule))
        return out

    def _check_dns_names(self) -> list[Violation]:
        errors = []
        claims: list[tuple[str, str, tuple[str | int, ...]]] = []
        for stack, spec in self.stacks.items():
            for service, routing in spec.services.items():
                for i, dns in enumerate(routing.dns_names):
                    claims.append((dns, f"{stack}/{service}", ("stacks", stack, "services", service, "dns_names", i)))
        if self.registry.enabled and self.registry.dns_name:
            claims.append((self.registry.dns_name, "the registry", ("registry", "dns_name")))
        if self.portainer.enabled and self.portainer.dns_name:
            claims.append((self.portainer.dns_name, "Portainer", ("portainer", "dns_name")))
        owners: dict[str, list[str]] = {}
        for dns, owner, _ in claims:
            owners.setdefault(dns, []).append(owner)
        for dns, _, path in claims:
            if len(owners[dns]) > 1:
                owned_by = " and ".join(owners[dns])
                errors.append(Violation(path, f"{dns} is claimed by {owned_by}; a name routes to one service"))
        return errors

    def _check_l7_update_delay(self) -> list[Violation]:
        """Each L7 task stops before its replacement starts (host-mode ports cannot be shared), so the pause before
        the next task must outlast the L4 pair noticing the node down and back up."""
        if not self.l4.enabled:
            return []
        check = self.l4.check
        needed = duration_ms(check.inter) * (check.fall + check.rise)
        if duration_ms(self.l7.update_delay) > needed:
            return []
        return [Violation(("l7", "update_delay"), f"{self.l7.update_delay} is not longer than the {needed} ms the L4 "
                          "checks need to take an L7 node out and put it back; a rolling update could stop two L7 "
                          "nodes the L4 pair still sends to")]


def _check_manager_count(count: int) -> list[Violation]:
    path = ("swarm", "managers")
    if count == 0:
        return [Violation(path, "a swarm needs at least 1 manager")]
    if count > MAX_MANAGERS:
        return [Violation(path, f"{count} managers slow every Raft write; use at most {MAX_MANAGERS} (1, 3, 5 or 7)")]
    if count % 2 == 0:
        tolerated = (count - 1) // 2
        failures = "any failure" if tolerated == 0 else f"more failures than {count - 1} would"
        return [Violation(path, f"{count} managers cannot tolerate {failures}; use 1, 3, 5 or 7")]
    return []


def _has_labels(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())
