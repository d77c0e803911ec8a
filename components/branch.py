"""Branch stacks: one short-lived cluster per git branch, none of them colliding with another.

    python -m components.branch name BRANCH     # the stack name a branch gets (used by the workflows)

A stack config whose estate has a `branch:` section is a branch template (`Pulumi.ci.yaml`).
`derive_branch_estate(raw, stack)` turns it into an ordinary estate in which everything that two
branch clusters on one Docker engine or hypervisor could both claim is derived from the stack
name: the estate name (which prefixes VM, container, network and volume names), the node network
name and bridge, the node and overlay subnets, the loopback-published ports, the VRRP router id,
NFS data paths and the public DNS names. The `branch:` section is removed afterwards, so the rest
of the model never sees it.

Subnets and ports come from a numbered *slot*. A stack's preferred slot is a hash of its name, so
it is the same on every run and every machine; two names can hash to the same slot, so the
pipeline pins the slot when it creates the stack (`branch.slot`, see components/branch_stacks.py),
probing past slots other live branch stacks hold and reporting the collision.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .branch_names import (
    MAX_NAME_LENGTH,
    Allocation,
    BranchPoolExhausted,
    allocate_slot,
    allocate_slots,
    preferred_slot,
    stack_name,
)
from .model import EstateConfigError, NodeGroup, config_path
from .model.base import DnsName

__all__ = [
    "MAX_NAME_LENGTH",
    "Allocation",
    "BranchPoolExhausted",
    "BranchSettings",
    "allocate_slot",
    "allocate_slots",
    "branch_metadata",
    "branch_settings",
    "derive_branch_estate",
    "preferred_slot",
    "stack_name",
]

LABEL_BRANCH = "swarm-estate.branch"
LABEL_CREATED = "swarm-estate.created"
LABEL_SLOT = "swarm-estate.slot"


class BranchSettings(BaseModel):
    """The `branch:` section of a branch template. Every field is documented for the README."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ci_domain: DnsName = Field(description="public names become <app>.<branch>.<ci_domain>")
    node_pool: IPv4Network = Field(
        default=IPv4Network("10.222.0.0/16"), description="node subnets are cut from this pool, one per slot"
    )
    node_prefix: int = Field(default=24, ge=16, le=29, description="prefix length of each branch's node subnet")
    overlay_pool: IPv4Network = Field(
        default=IPv4Network("10.128.0.0/10"),
        description="one block per slot for haproxy-public, fixed-subnet overlays and the swarm address pool",
    )
    overlay_prefix: int = Field(default=20, ge=8, le=28, description="prefix length of each branch's overlay block")
    port_base: int = Field(default=20000, ge=1024, le=65000, description="first loopback port handed to slot 0")
    port_stride: int = Field(
        default=10, ge=3, le=1000, description="ports per slot: engine API, then L7 HTTP and HTTPS per L7 node"
    )
    max_slots: int | None = Field(default=None, ge=1, description="use at most this many slots (default: all)")
    slot: int | None = Field(default=None, ge=0, description="pinned by the pipeline when it creates the stack")
    created: datetime | None = Field(default=None, description="pinned creation time (UTC), for the reaper")
    source: str | None = Field(default=None, description="the git branch the stack was made for (informational)")

    @field_validator("created")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    def slot_count(self) -> int:
        node_slots = _fits(self.node_pool, self.node_prefix)
        overlay_slots = _fits(self.overlay_pool, self.overlay_prefix)
        port_slots = (65536 - self.port_base) // self.port_stride
        count = min(node_slots, overlay_slots, port_slots)
        return min(count, self.max_slots) if self.max_slots else count

    def node_subnet(self, slot: int) -> IPv4Network:
        return _nth_subnet(self.node_pool, self.node_prefix, slot)

    def overlay_block(self, slot: int) -> IPv4Network:
        return _nth_subnet(self.overlay_pool, self.overlay_prefix, slot)

    def ports(self, slot: int) -> tuple[int, int, int, int]:
        """(engine API, first L7 HTTP, first L7 HTTPS, L7 nodes that fit) of a slot."""
        base = self.port_base + slot * self.port_stride
        per_kind = (self.port_stride - 1) // 2
        return base, base + 1, base + 1 + per_kind, per_kind


def _fits(pool: IPv4Network, prefix: int) -> int:
    return 2 ** (prefix - pool.prefixlen) if prefix >= pool.prefixlen else 0


def _nth_subnet(pool: IPv4Network, prefix: int, n: int) -> IPv4Network:
    size = 2 ** (32 - prefix)
    return IPv4Network((int(pool.network_address) + n * size, prefix))


# --- the derivation ----------------------------------------------------------------------


def _error(path: tuple[str | int, ...], message: str) -> EstateConfigError:
    return EstateConfigError([f"{config_path(path)}: {message}"])


def branch_settings(raw: Mapping[str, Any]) -> BranchSettings | None:
    section = raw.get("branch")
    if section is None:
        return None
    try:
        return BranchSettings.model_validate(section)
    except ValidationError as exc:
        problems = [
            f"{config_path(('branch', *err['loc']))}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors(include_url=False)
        ]
        raise EstateConfigError(problems) from None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def branch_metadata(raw: Mapping[str, Any], stack: str, now: datetime | None = None) -> dict[str, Any] | None:
    """What the program should export as the `branch` output (the reaper's second source)."""
    settings = branch_settings(raw)
    if settings is None:
        return None
    name = stack_name(stack.rsplit("/", 1)[-1])
    slot = settings.slot if settings.slot is not None else preferred_slot(name, settings.slot_count())
    created = settings.created or now
    return {"stack": name, "source": settings.source or name, "slot": slot, "created": created and _iso(created)}


def derive_branch_estate(raw: dict[str, Any], stack: str, now: datetime | None = None) -> dict[str, Any]:
    """A copy of `raw` with every collision-prone setting derived from the stack name.

    Without a `branch:` section the estate is returned unchanged (as a copy). `stack` may be a
    fully qualified `org/project/stack` name. The creation-time label comes from `branch.created`
    (the pipeline pins it), else from `now`; with neither it is left out, so an unpinned synth is
    reproducible and a re-run never relabels every node with a new time.
    """
    out = copy.deepcopy(raw)
    settings = branch_settings(raw)
    out.pop("branch", None)  # `branch:` with nothing under it is no branch template
    if settings is None:
        return out
    name = stack_name(stack.rsplit("/", 1)[-1])
    slots = settings.slot_count()
    if slots == 0:
        raise _error(("branch",), "the branch pools leave no slot at all: check the pool and prefix lengths")
    if settings.node_pool.overlaps(settings.overlay_pool):
        raise _error(("branch", "overlay_pool"), f"overlaps node_pool {settings.node_pool}")
    slot = settings.slot if settings.slot is not None else preferred_slot(name, slots)
    if slot >= slots:
        raise _error(("branch", "slot"), f"slot {slot} is outside the pool's {slots} slots (0..{slots - 1})")
    substrate = out.get("substrate")
    if substrate not in ("docker", "libvirt"):
        raise _error(("substrate",), f"a branch stack creates its own nodes: use docker or libvirt, not {substrate}")
    moment = settings.created or now

    out["name"] = name
    out["protect"] = False  # the reaper and the close workflow must be able to destroy it
    _derive_network(out, name, slot, settings)
    _derive_overlays(out, settings.overlay_block(slot))
    if substrate == "docker":
        _derive_ports(out, slot, settings)
    _derive_dns(out, name, settings.ci_domain)
    _derive_data_paths(out, name)
    labels = {LABEL_BRANCH: name, LABEL_SLOT: str(slot)}
    if moment is not None:
        labels[LABEL_CREATED] = _iso(moment)
    _add_labels(out, labels)
    l4 = out.get("l4")
    if isinstance(l4, dict) and l4.get("enabled"):
        l4["vrrp_router_id"] = 1 + slot % 255  # pairs of two branches on one LAN must not share a VRRP id
    return out


def _rebase(address: Any, old: IPv4Network, new: IPv4Network, path: tuple[str | int, ...]) -> Any:
    """The same host offset in the new subnet, for fixed addresses of the template."""
    try:
        addr = IPv4Address(str(address))
    except ValueError:
        return address
    if addr not in old:
        return address
    offset = int(addr) - int(old.network_address)
    if offset >= new.num_addresses - 1:
        raise _error(path, f"{addr} (host {offset} of {old}) does not fit the branch node subnet {new}")
    return str(new.network_address + offset)


def _derive_network(out: dict[str, Any], name: str, slot: int, settings: BranchSettings) -> None:
    network = out.setdefault("node_network", {})
    old_name = network.get("name", "swarm")
    old_subnet = IPv4Network(str(network.get("subnet", settings.node_subnet(slot))))
    new_subnet = settings.node_subnet(slot)
    if out["substrate"] == "libvirt" and network.get("mode", "existing") == "existing":
        raise _error(
            ("node_network", "mode"),
            "a branch stack cannot share an existing libvirt network: use mode nat (or bridge)",
        )
    network["name"] = f"{name}-net"
    network["subnet"] = str(new_subnet)
    if network.get("mode") == "nat":
        # Linux caps interface names at 15 characters; the slot keeps bridges of live branches apart.
        network["bridge"] = f"sebr{slot}"
    if "gateway" in network and network["gateway"] is not None:
        network["gateway"] = _rebase(network["gateway"], old_subnet, new_subnet, ("node_network", "gateway"))
    network["dns_servers"] = [
        _rebase(a, old_subnet, new_subnet, ("node_network", "dns_servers", i))
        for i, a in enumerate(network.get("dns_servers") or [])
    ]
    for hypervisor in out.get("hypervisors") or []:
        if isinstance(hypervisor, dict) and hypervisor.get("network") == old_name:
            hypervisor["network"] = network["name"]
    for role in ("managers", "workers"):
        group = (out.get("swarm") or {}).get(role)
        specs = group if isinstance(group, list) else (group or {}).get("nodes", []) if isinstance(group, dict) else []
        for i, spec in enumerate(specs):
            if isinstance(spec, dict) and spec.get("address") is not None:
                spec["address"] = _rebase(spec["address"], old_subnet, new_subnet, ("swarm", role, "nodes", i))
    l4 = out.get("l4")
    if isinstance(l4, dict):
        if l4.get("virtual_ip") is not None:
            l4["virtual_ip"] = _rebase(l4["virtual_ip"], old_subnet, new_subnet, ("l4", "virtual_ip"))
        for i, node in enumerate(l4.get("nodes") or []):
            node["address"] = _rebase(node["address"], old_subnet, new_subnet, ("l4", "nodes", i, "address"))


class _Cutter:
    """Cuts aligned subnets one after another from the start of a block."""

    def __init__(self, block: IPv4Network, limit: int):
        self.block = block
        self.cursor = int(block.network_address)
        self.limit = limit

    def cut(self, prefix: int, path: tuple[str | int, ...]) -> str:
        size = 2 ** (32 - prefix)
        start = -(-self.cursor // size) * size
        if prefix < self.block.prefixlen or start + size > self.limit:
            raise _error(path, f"a /{prefix} does not fit the branch overlay block {self.block}: raise overlay_prefix")
        self.cursor = start + size
        return str(IPv4Network((start, prefix)))


def _derive_overlays(out: dict[str, Any], block: IPv4Network) -> None:
    swarm = out.setdefault("swarm", {})
    pool = swarm.get("default_addr_pool") if isinstance(swarm, dict) else None
    end = int(block.broadcast_address) + 1
    # With a swarm address pool, fixed subnets take the lower half and the pool the upper half.
    cutter = _Cutter(block, end - block.num_addresses // 2 if pool else end)
    public = out.setdefault("public_network", {"name": "haproxy-public", "subnet": "10.10.0.0/22"})
    prefix = IPv4Network(str(public.get("subnet") or "10.10.0.0/22")).prefixlen
    public["subnet"] = cutter.cut(prefix, ("public_network", "subnet"))
    for i, overlay in enumerate(out.get("overlays") or []):
        if overlay.get("subnet"):
            overlay["subnet"] = cutter.cut(IPv4Network(str(overlay["subnet"])).prefixlen, ("overlays", i, "subnet"))
    if pool:
        upper = IPv4Network((int(block.network_address) + block.num_addresses // 2, block.prefixlen + 1))
        mask = swarm.get("default_addr_pool_mask_length") or 24
        if mask <= upper.prefixlen:
            raise _error(("swarm", "default_addr_pool_mask_length"), f"/{mask} does not fit the pool {upper}")
        swarm["default_addr_pool"] = [str(upper)]
        swarm["default_addr_pool_mask_length"] = mask


def _node_count(out: dict[str, Any]) -> int:
    swarm = out.get("swarm") or {}
    managers = swarm.get("managers", 1)
    workers = swarm.get("workers", 0)
    return NodeGroup.model_validate(managers).size + NodeGroup.model_validate(workers).size


def _derive_ports(out: dict[str, Any], slot: int, settings: BranchSettings) -> None:
    api, http, https, fits = settings.ports(slot)
    nodes = _node_count(out)
    if nodes > fits:
        raise _error(
            ("branch", "port_stride"),
            f"{nodes} nodes could each run L7 and need 2 ports each plus the API port: "
            f"use a port_stride of at least {2 * nodes + 1}",
        )
    docker = out.setdefault("docker", {})
    docker.update(api_port=api, l7_http_port=http, l7_https_port=https)


def _branch_dns(original: str, old_domain: str, name: str, ci_domain: str) -> str:
    host = original.lower().rstrip(".")
    if old_domain and (host == old_domain or host.endswith("." + old_domain)):
        app = host[: -len(old_domain)].rstrip(".") or "www"
    else:
        app = host.rsplit(".", 1)[0]  # outside the domain: everything but the top-level label
    return f"{app.replace('.', '-')}.{name}.{ci_domain}"


def _derive_dns(out: dict[str, Any], name: str, ci_domain: str) -> None:
    old_domain = str(out.get("domain", "")).lower().rstrip(".")
    out["domain"] = f"{name}.{ci_domain}"
    owners: dict[str, str] = {}

    def claim(original: str, path: tuple[str | int, ...]) -> str:
        derived = _branch_dns(original, old_domain, name, ci_domain)
        app = derived.split(".", 1)[0]
        if len(app) > 63:
            raise _error(path, f"{original} gives the DNS label {app!r}, longer than 63 characters")
        if derived in owners and owners[derived] != original:
            raise _error(path, f"{original} and {owners[derived]} both become {derived} in a branch stack")
        owners[derived] = original
        return derived

    for stack, spec in (out.get("stacks") or {}).items():
        for service, routing in (spec.get("services") or {}).items():
            names = routing.get("dns_names") or []
            routing["dns_names"] = [
                claim(dns, ("stacks", stack, "services", service, "dns_names", i)) for i, dns in enumerate(names)
            ]
    for key in ("registry", "portainer"):
        section = out.get(key)
        if isinstance(section, dict) and section.get("dns_name"):
            section["dns_name"] = claim(section["dns_name"], (key, "dns_name"))


def _derive_data_paths(out: dict[str, Any], name: str) -> None:
    """Branch data lives under branches/<name>/ of a shared NFS export, apart from every other estate's.

    (swarm-estate never deletes NFS data, so a destroyed branch leaves its directory behind.)
    """
    for spec in (out.get("stacks") or {}).values():
        for volume in (spec.get("volumes") or {}).values():
            volume["subpath"] = f"branches/{name}/{str(volume.get('subpath', '')).strip('/')}".rstrip("/")
    registry = out.get("registry")
    if isinstance(registry, dict) and registry.get("enabled"):
        registry["subpath"] = f"branches/{name}/{str(registry.get('subpath', 'registry')).strip('/')}"


def _with_labels(labels: Any, extra: dict[str, str]) -> Any:
    if isinstance(labels, list):
        return [item for item in labels if str(item).split("=", 1)[0] not in extra] + [
            f"{k}={v}" for k, v in extra.items()
        ]
    return {**(labels or {}), **extra}


def _add_labels(out: dict[str, Any], extra: dict[str, str]) -> None:
    swarm = out.setdefault("swarm", {})
    for role, default in (("managers", 1), ("workers", 0)):
        given = swarm.get(role, default)
        group: dict[str, Any]
        if isinstance(given, dict):
            group = given
        elif isinstance(given, list):
            group = {"nodes": given}
        else:
            group = {"count": given}
        group["labels"] = _with_labels(group.get("labels"), extra)
        swarm[role] = group


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "name":
        print(stack_name(args[1]))
        return 0
    print("usage: python -m components.branch name BRANCH", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
