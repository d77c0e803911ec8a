"""Branch stacks: one short-lived cluster per git branch, none of them colliding with another.

A stack config whose estate has a `branch:` section is a branch template (`Pulumi.ci.yaml`). It is validated as
an estate like any other; then `derive_branch(template, stack)` makes, from the validated template and the stack
name, an estate in which everything two branch clusters on one Docker engine or hypervisor could both claim is
derived from the stack name: the estate name (which prefixes VM, container, network and volume names), the node
network and bridge, the node and overlay subnets, the loopback-published ports, the VRRP router id, NFS data paths
and the public DNS names. The derived estate is validated again, with every rule.

Subnets and ports come from a numbered *slot*. A stack's preferred slot is a hash of its name, so it is the same on
every run and every machine; two names can hash to the same slot, so the pipeline pins the slot when it creates the
stack (`branch.slot`, see tools/branch_pins.py), probing past slots other live branch stacks hold.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from .base import DnsName, Strict, Violation, raise_if_any

if TYPE_CHECKING:
    from .estate import EstateSpec

MAX_NAME_LENGTH = 32
HASH_LENGTH = 8
LABEL_BRANCH = "swarm-estate.branch"
LABEL_CREATED = "swarm-estate.created"
LABEL_SLOT = "swarm-estate.slot"


# --- names and slots -------------------------------------------------------------------------------------------


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stack_name(branch: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """The stack (and estate) name of a git branch: lowercase `[a-z0-9-]`, starting with a letter.

    When the mapping loses anything (case, `/`, accents, other scripts, length) a hash of the original name is
    appended, so `Feature/Foo`, `feature/foo` and `feature-foo` stay three stacks. A name that is already valid maps
    to itself, so the function is idempotent.
    """
    if max_length < HASH_LENGTH + 3:
        raise ValueError(f"max_length {max_length} leaves no room for the {HASH_LENGTH}-character hash suffix")
    ascii_text = unicodedata.normalize("NFKD", branch).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if text and not text[0].isalpha():
        text = f"b-{text}"
    if text and text == branch and len(text) <= max_length:
        return text
    room = max_length - HASH_LENGTH - 1
    head = text[:room].rstrip("-") or "b"
    return f"{head}-{_digest(branch)[:HASH_LENGTH]}"


def preferred_slot(stack: str, slots: int) -> int:
    # sha256, not hash(): Python salts str hashes per process, and the slot must be stable.
    return int(_digest(stack)[:12], 16) % slots


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the `branch:` section -------------------------------------------------------------------------------------


class BranchSettings(Strict):
    """The `branch:` section of a branch template."""

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
        default=10, ge=2, le=1000, description="ports per slot: L7 HTTP, then L7 HTTPS, per L7 node"
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

    @model_validator(mode="after")
    def _pools(self) -> BranchSettings:
        errors = []
        slots = self.slot_count()
        if slots == 0:
            errors.append(Violation((), "the branch pools leave no slot at all: check the pool and prefix lengths"))
        if self.node_pool.overlaps(self.overlay_pool):
            errors.append(Violation(("overlay_pool",), f"overlaps node_pool {self.node_pool}"))
        if self.slot is not None and slots and self.slot >= slots:
            errors.append(
                Violation(("slot",), f"slot {self.slot} is outside the pool's {slots} slots (0..{slots - 1})")
            )
        raise_if_any(errors)
        return self

    def slot_count(self) -> int:
        node_slots = _fits(self.node_pool, self.node_prefix)
        overlay_slots = _fits(self.overlay_pool, self.overlay_prefix)
        port_slots = (65536 - self.port_base) // self.port_stride
        count = min(node_slots, overlay_slots, port_slots)
        return min(count, self.max_slots) if self.max_slots else count

    def slot_of(self, stack: str) -> int:
        return self.slot if self.slot is not None else preferred_slot(stack, self.slot_count())

    def node_subnet(self, slot: int) -> IPv4Network:
        return _nth_subnet(self.node_pool, self.node_prefix, slot)

    def overlay_block(self, slot: int) -> IPv4Network:
        return _nth_subnet(self.overlay_pool, self.overlay_prefix, slot)

    def ports(self, slot: int) -> tuple[int, int, int]:
        """(first L7 HTTP, first L7 HTTPS, L7 nodes that fit) of a slot."""
        base = self.port_base + slot * self.port_stride
        per_kind = self.port_stride // 2
        return base, base + per_kind, per_kind


def _fits(pool: IPv4Network, prefix: int) -> int:
    return 2 ** (prefix - pool.prefixlen) if prefix >= pool.prefixlen else 0


def _nth_subnet(pool: IPv4Network, prefix: int, n: int) -> IPv4Network:
    size = 2 ** (32 - prefix)
    return IPv4Network((int(pool.network_address) + n * size, prefix))


def template_rules(spec: EstateSpec) -> list[Violation]:
    """What a branch template must be, whatever the branch (checked with the estate's other rules)."""
    branch = spec.branch
    if branch is None:
        return []
    out = []
    if spec.substrate not in ("docker", "libvirt"):
        out.append(Violation(("substrate",), f"a branch stack creates its own nodes: use docker or libvirt, "
                                              f"not {spec.substrate}"))
    if spec.substrate == "libvirt" and spec.node_network.mode == "existing":
        out.append(Violation(("node_network", "mode"),
                             "a branch stack cannot share an existing libvirt network: use mode nat (or bridge)"))
    fits = branch.ports(0)[2]
    if spec.substrate == "docker" and len(spec.nodes) > fits:
        out.append(Violation(("branch", "port_stride"), f"{len(spec.nodes)} nodes could each run L7 and need 2 ports "
                             f"each: use a port_stride of at least {2 * len(spec.nodes)}"))
    return out


# --- the derivation --------------------------------------------------------------------------------------------


def branch_metadata(spec: EstateSpec, stack: str, now: datetime | None = None) -> dict[str, Any] | None:
    """What the program exports as the `branch` output (the reaper's second source)."""
    if spec.branch is None:
        return None
    name = stack_name(stack.rsplit("/", 1)[-1])
    created = spec.branch.created or now
    return {"stack": name, "source": spec.branch.source or name, "slot": spec.branch.slot_of(name),
            "created": created and iso(created)}


def derive_branch(template: EstateSpec, stack: str, now: datetime | None = None) -> EstateSpec:
    """The estate of branch stack `stack` (which may be a fully qualified `org/project/stack`) from a validated
    template. The creation-time label comes from `branch.created` (the pipeline pins it), else from `now`; with
    neither it is left out, so an unpinned synth is reproducible and a re-run never relabels every node."""
    from . import EstateConfigError, format_violation, load_estate

    branch = template.branch
    assert branch is not None, "only a branch template has a branch to derive"
    name = stack_name(stack.rsplit("/", 1)[-1])
    slot = branch.slot_of(name)
    rebase = _Rebase(template.node_network.subnet, branch.node_subnet(slot))
    errors: list[Violation] = []

    network = template.node_network.model_copy(update={
        "name": f"{name}-net",
        "subnet": rebase.new,
        # Linux caps interface names at 15 characters; the slot keeps bridges of live branches apart.
        "bridge": f"sebr{slot}" if template.node_network.mode == "nat" else template.node_network.bridge,
        "gateway": rebase(template.node_network.gateway, ("node_network", "gateway"), errors),
        "dns_servers": [rebase(a, ("node_network", "dns_servers", i), errors)
                        for i, a in enumerate(template.node_network.dns_servers)],
    })
    hypervisors = [h.model_copy(update={"network": network.name}) if h.network == template.node_network.name else h
                   for h in template.hypervisors]
    moment = branch.created or now
    labels = {LABEL_BRANCH: name, LABEL_SLOT: str(slot), **({LABEL_CREATED: iso(moment)} if moment else {})}
    groups = {}
    for role in ("managers", "workers"):
        group = getattr(template.swarm, role)
        groups[role] = group.model_copy(update={
            "labels": {**group.labels, **labels},
            "nodes": [n.model_copy(update={"address": rebase(n.address, ("swarm", role, "nodes", i), errors)})
                      for i, n in enumerate(group.nodes)],
        })
    cutter = _Cutter(branch.overlay_block(slot), half=bool(template.swarm.default_addr_pool))
    public_prefix = (template.public_network.subnet or _default_public_subnet()).prefixlen
    public = template.public_network.model_copy(update={"subnet": cutter.cut(public_prefix, ("public_network",
                                                                                             "subnet"), errors)})
    overlays = [o.model_copy(update={"subnet": cutter.cut(o.subnet.prefixlen, ("overlays", i, "subnet"), errors)})
                if o.subnet else o for i, o in enumerate(template.overlays)]
    swarm_update: dict[str, Any] = dict(groups)
    if template.swarm.default_addr_pool:
        upper = cutter.upper_half()
        mask = template.swarm.default_addr_pool_mask_length or 24
        if mask <= upper.prefixlen:
            errors.append(
                Violation(("swarm", "default_addr_pool_mask_length"), f"/{mask} does not fit the pool {upper}")
            )
        swarm_update.update(default_addr_pool=[upper], default_addr_pool_mask_length=mask)
    docker = template.docker
    if template.substrate == "docker":
        http, https, _ = branch.ports(slot)
        docker = docker.model_copy(update={"l7_http_port": http, "l7_https_port": https})
    dns = _Dns(template.domain, name, branch.ci_domain, errors)
    stacks = {
        key: stack_spec.model_copy(update={
            "services": {svc: routing.model_copy(update={"dns_names": [
                dns.claim(d, ("stacks", key, "services", svc, "dns_names", i)) for i, d in enumerate(routing.dns_names)
            ]}) for svc, routing in stack_spec.services.items()},
            # Branch data lives under branches/<name>/ of a shared export (NFS data is never deleted).
            "volumes": {vol: volume.model_copy(update={"subpath": _branch_path(name, volume.subpath)})
                        for vol, volume in stack_spec.volumes.items()},
        })
        for key, stack_spec in template.stacks.items()
    }
    registry = template.registry.model_copy(update={
        "dns_name": template.registry.dns_name and dns.claim(template.registry.dns_name, ("registry", "dns_name")),
        "subpath": _branch_path(name, template.registry.subpath) if template.registry.enabled
        else template.registry.subpath,
    })
    portainer = template.portainer.model_copy(update={
        "dns_name": template.portainer.dns_name and dns.claim(template.portainer.dns_name, ("portainer", "dns_name")),
    })
    l4 = template.l4.model_copy(update={
        "virtual_ip": rebase(template.l4.virtual_ip, ("l4", "virtual_ip"), errors),
        "nodes": [n.model_copy(update={"address": rebase(n.address, ("l4", "nodes", i, "address"), errors)})
                  for i, n in enumerate(template.l4.nodes)],
        # pairs of two branches on one LAN must not share a VRRP id
        **({"vrrp_router_id": 1 + slot % 255} if template.l4.enabled else {}),
    })
    if errors:
        raise EstateConfigError([format_violation(v) for v in errors])
    derived = template.model_copy(update={
        "name": name,
        "domain": dns.domain,
        "protect": False,  # the reaper and the close workflow must be able to destroy it
        "node_network": network,
        "hypervisors": hypervisors,
        "swarm": template.swarm.model_copy(update=swarm_update),
        "public_network": public,
        "overlays": overlays,
        "docker": docker,
        "stacks": stacks,
        "registry": registry,
        "portainer": portainer,
        "l4": l4,
        "branch": None,
    })
    # every rule again, on what the branch actually gets
    return load_estate(derived.model_dump())


def _default_public_subnet() -> IPv4Network:
    from .proxy import _public_network

    subnet = _public_network().subnet
    assert subnet is not None
    return subnet


def _branch_path(name: str, subpath: str | None) -> str:
    return f"branches/{name}/{str(subpath or '').strip('/')}".rstrip("/")


class _Rebase:
    """The same host offset in the branch's node subnet, for the template's fixed addresses."""

    def __init__(self, old: IPv4Network, new: IPv4Network):
        self.old, self.new = old, new

    def __call__(self, address: IPv4Address | None, path: tuple[str | int, ...], errors: list[Violation]) -> Any:
        if address is None or address not in self.old:
            return address
        offset = int(address) - int(self.old.network_address)
        if offset >= self.new.num_addresses - 1:
            errors.append(Violation(path, f"{address} (host {offset} of {self.old}) does not fit the branch node "
                                          f"subnet {self.new}"))
            return address
        return self.new.network_address + offset


class _Cutter:
    """Cuts aligned subnets one after another from the start of a block (its lower half when the swarm address
    pool takes the upper half)."""

    def __init__(self, block: IPv4Network, half: bool):
        self.block = block
        self.cursor = int(block.network_address)
        end = int(block.broadcast_address) + 1
        self.limit = end - block.num_addresses // 2 if half else end

    def cut(self, prefix: int, path: tuple[str | int, ...], errors: list[Violation]) -> IPv4Network | None:
        size = 2 ** (32 - prefix)
        start = -(-self.cursor // size) * size
        if prefix < self.block.prefixlen or start + size > self.limit:
            errors.append(Violation(path, f"a /{prefix} does not fit the branch overlay block {self.block}: raise "
                                          "overlay_prefix"))
            return None
        self.cursor = start + size
        return IPv4Network((start, prefix))

    def upper_half(self) -> IPv4Network:
        return IPv4Network((int(self.block.network_address) + self.block.num_addresses // 2,
                            self.block.prefixlen + 1))


class _Dns:
    """Public names become <app>.<branch>.<ci_domain>; two names merging into one is an error."""

    def __init__(self, old_domain: str, name: str, ci_domain: str, errors: list[Violation]):
        self.old = old_domain.lower().rstrip(".")
        self.name, self.ci_domain, self.errors = name, ci_domain, errors
        self.domain = f"{name}.{ci_domain}"
        self.owners: dict[str, str] = {}

    def claim(self, original: str, path: tuple[str | int, ...]) -> str:
        host = original.lower().rstrip(".")
        if self.old and (host == self.old or host.endswith("." + self.old)):
            app = host[: -len(self.old)].rstrip(".") or "www"
        else:
            app = host.rsplit(".", 1)[0]  # outside the domain: everything but the top-level label
        app = app.replace(".", "-")
        derived = f"{app}.{self.domain}"
        if len(app) > 63:
            self.errors.append(Violation(path, f"{original} gives the DNS label {app!r}, longer than 63 characters"))
        elif derived in self.owners and self.owners[derived] != original:
            self.errors.append(Violation(path, f"{original} and {self.owners[derived]} both become {derived} in a "
                                               "branch stack"))
        self.owners[derived] = original
        return derived
