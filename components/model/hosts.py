"""Model of the machines: hypervisors, node network, base image, SSH, engine, swarm node groups, NFS."""

from __future__ import annotations

import os
from ipaddress import IPv4Address, IPv4Network
from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from .base import Labels, Name, Port, SecretRef, Strict

Role = Literal["manager", "worker"]
Availability = Literal["active", "pause", "drain"]


class Hypervisor(Strict):
    name: Name = Field(description="short name of the KVM host, used in resource names and placement")
    uri: str = Field(description="libvirt connection URI, e.g. qemu+ssh://root@kvm1.example.org/system")
    pool: str = Field(default="default", description="libvirt storage pool that holds the base image and node disks")
    network: str | None = Field(
        default=None, description="libvirt network the node NICs attach to (default: node_network.name)"
    )
    domain_type: Literal["kvm", "qemu"] = Field(
        default="kvm",
        description="kvm (hardware virtualisation), or qemu: software emulation (TCG), slow, for a host whose KVM "
        "is absent or unusable, e.g. nested in a VM",
    )

    @field_validator("uri")
    @classmethod
    def _qemu_uri(cls, uri: str) -> str:
        if not uri.startswith(("qemu:", "qemu+")):
            raise ValueError(f"{uri!r} is not a KVM libvirt URI: use qemu+ssh://user@host/system (or qemu:///system)")
        return uri


class NodeNetwork(Strict):
    """The L2/L3 network every node (and the L4 pair) sits on."""

    name: Name = Field(default="swarm", description="libvirt network or Docker bridge network name")
    subnet: IPv4Network = Field(description="node subnet; node addresses, the L4 virtual IP and firewall rules use it")
    gateway: IPv4Address | None = Field(
        default=None, description="default gateway (default: first address of the subnet)"
    )
    mode: Literal["nat", "bridge", "existing"] = Field(
        default="existing",
        description="libvirt: create a NAT network, a network over a host bridge, or use an existing network",
    )
    bridge: str | None = Field(default=None, description="host bridge device for mode=bridge (e.g. br0)")
    dns_servers: list[IPv4Address] = Field(default_factory=list, description="resolvers written into the nodes")

    @model_validator(mode="after")
    def _bridge_needs_device(self) -> NodeNetwork:
        if self.mode == "bridge" and not self.bridge:
            raise ValueError("mode bridge needs `bridge`: the host bridge device (e.g. br0) the network sits on")
        return self

    def first_host(self) -> IPv4Address:
        return self.subnet.network_address + 1

    def effective_gateway(self) -> IPv4Address:
        return self.gateway or self.first_host()


class BaseImage(Strict):
    name: Name = Field(default="debian-12", description="name of the base image volume in each hypervisor pool")
    url: str | None = Field(
        default="https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2",
        description="where each hypervisor downloads the cloud image from (ignored when `volume` is set)",
    )
    volume: str | None = Field(default=None, description="use this existing volume of the pool instead of downloading")
    format: Literal["qcow2", "raw"] = Field(default="qcow2", description="disk format of the base image")
    family: Literal["debian", "rhel"] = Field(default="debian", description="package family, decides package names")
    offline: bool = Field(
        default=False,
        description="the image already holds every package the nodes need and they reach no package mirror: "
        "nothing is installed at boot or in a bootstrap, and a package the image lacks fails the host, named",
    )


class SshAccess(Strict):
    user: str = Field(default="ops", pattern=r"^[a-z_][a-z0-9_-]{0,31}$", description="ops user created on every node")
    authorized_keys: list[str] = Field(default_factory=list, description="public keys allowed to log in as the user")
    private_key_secret: SecretRef | None = Field(
        default=None, description="secret config key holding the private key Pulumi uses for remote commands"
    )
    port: Port = Field(default=22, description="sshd port on the nodes")

    @field_validator("authorized_keys")
    @classmethod
    def _public_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if not key.startswith(("ssh-", "ecdsa-", "sk-")) or len(key.split()) < 2:
                raise ValueError(f"{key[:40]!r}… is not an OpenSSH public key line (ssh-ed25519 AAAA… comment)")
        return keys


# The options Docker's own log drivers take (moby daemon/logger/<driver>/ ValidateLogOpt), and the two every
# driver takes. A wrong one fails every task at start ("unknown log opt"): checked up front instead. Other
# drivers (plugins, fluentd, gelf…) are passed through unchecked.
_COMMON_LOG_OPTIONS = frozenset({"mode", "max-buffer-size"})
_META = frozenset({"labels", "labels-regex", "env", "env-regex", "tag"})
LOG_OPTIONS: dict[str, frozenset[str]] = {
    "json-file": _META | {"max-size", "max-file", "compress"},
    "local": frozenset({"max-size", "max-file", "compress"}),
    "journald": _META,
    "syslog": _META | {"syslog-address", "syslog-facility", "syslog-format", "syslog-tls-ca-cert",
                       "syslog-tls-cert", "syslog-tls-key", "syslog-tls-skip-verify"},
    "none": frozenset(),
}  # fmt: skip


def unknown_log_options(driver: str, options: dict[str, str]) -> list[str]:
    """Options `driver` would refuse; none for a driver this table does not know."""
    known = LOG_OPTIONS.get(driver)
    return [] if known is None else sorted(set(options) - known - _COMMON_LOG_OPTIONS)


class EngineSettings(Strict):
    install: Literal["distro", "preinstalled"] = Field(
        default="distro", description="install Docker from the distribution's packages, or expect it to be there"
    )
    log_driver: str = Field(default="journald", description="default logging driver in daemon.json")
    log_opts: dict[str, str] = Field(default_factory=dict, description="default log-opts in daemon.json")
    live_restore: bool = Field(
        default=False, description="daemon.json live-restore (must stay false on swarm managers)"
    )

    @model_validator(mode="after")
    def _log_options(self) -> EngineSettings:
        unknown = unknown_log_options(self.log_driver, self.log_opts)
        if unknown:
            raise ValueError(f"log_opts {', '.join(unknown)}: the {self.log_driver} log driver has no such option, "
                             "and the engine would not start")  # fmt: skip
        return self

    @field_validator("live_restore")
    @classmethod
    def _no_live_restore(cls, value: bool) -> bool:
        if value:
            raise ValueError("live-restore is incompatible with swarm mode (dockerd refuses to start); leave it false")
        return value


class NodeSpec(Strict):
    """One explicitly described node; any field left out comes from its group."""

    name: Name = Field(description="host name, also the swarm node name")
    address: IPv4Address | None = Field(default=None, description="fixed address (default: allocated from the subnet)")
    hypervisor: Name | None = Field(default=None, description="pin to this hypervisor (default: spread round-robin)")
    vcpu: PositiveInt | None = Field(default=None, description="virtual CPUs (default: the group's)")
    memory_mib: PositiveInt | None = Field(default=None, description="memory in MiB (default: the group's)")
    disk_gib: PositiveInt | None = Field(default=None, description="root disk in GiB (default: the group's)")
    labels: Labels = Field(default_factory=dict, description="swarm node labels added to the group's")
    availability: Availability | None = Field(default=None, description="active, pause or drain (default: the group's)")
    ssh_user: str | None = Field(default=None, description="existing hosts: login user (default: ssh.user)")


class NodeGroup(Strict):
    """Managers or workers: a count, an explicit list, or both (list entries fill the first slots)."""

    count: int | None = Field(default=None, ge=0, description="number of nodes (default: length of `nodes`)")
    name_prefix: Name | None = Field(default=None, description="generated names are <prefix><n> (default: role name)")
    vcpu: PositiveInt = Field(default=2, description="virtual CPUs per node")
    memory_mib: PositiveInt = Field(default=4096, description="memory per node in MiB")
    disk_gib: PositiveInt = Field(default=40, description="root disk per node in GiB")
    labels: Labels = Field(default_factory=dict, description="swarm node labels of every node in the group")
    availability: Availability = Field(default="active", description="swarm availability of every node in the group")
    hypervisors: list[Name] | None = Field(default=None, description="restrict placement to these hypervisors")
    nodes: list[NodeSpec] = Field(default_factory=list, description="explicitly described nodes")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # `managers: 3` and `workers: [ {name: …}, … ]` are the forms people write first.
        if isinstance(value, int) and not isinstance(value, bool):
            return {"count": value}
        if isinstance(value, list):
            return {"nodes": value}
        return value

    @model_validator(mode="after")
    def _count_covers_nodes(self) -> NodeGroup:
        if self.count is not None and self.count < len(self.nodes):
            raise ValueError(f"count {self.count} is smaller than the {len(self.nodes)} nodes listed")
        return self

    @property
    def size(self) -> int:
        return len(self.nodes) if self.count is None else self.count


class SwarmSpec(Strict):
    managers: NodeGroup = Field(default_factory=lambda: NodeGroup(count=1), description="manager nodes")
    workers: NodeGroup = Field(default_factory=lambda: NodeGroup(count=0), description="worker nodes")
    default_addr_pool: list[IPv4Network] = Field(
        default_factory=list, description="swarm init --default-addr-pool (overlay subnets are cut from it)"
    )
    default_addr_pool_mask_length: int | None = Field(default=None, ge=8, le=30, description="size of each cut subnet")
    data_path_port: Port = Field(default=4789, description="VXLAN data path port (swarm init --data-path-port)")
    dissolve_on_destroy: bool = Field(
        default=False,
        description="let `pulumi destroy` dissolve the swarm on its last manager (dev/ci); off, destroy stops there",
    )
    owned_label_prefixes: list[str] = Field(
        default_factory=list,
        description="label keys with these prefixes are owned by the model: removed from nodes when not declared",
    )


class DockerSubstrate(Strict):
    """Dev/ephemeral nodes as docker-in-docker containers on an engine you already have."""

    def api_socket(self, estate: str) -> str:
        """The first manager's engine socket on this machine. Only its owner can reach it (the directory is 0700):
        an engine API on TCP, even on loopback, would let any local process take over the swarm."""
        return os.path.join(os.path.expanduser(self.api_socket_dir), estate, "docker.sock")

    engine_host: str = Field(
        default="unix:///var/run/docker.sock", description="the engine that runs the node containers"
    )
    image: str = Field(default="docker:27-dind", description="node image (a Docker engine in a container)")
    privileged: bool = Field(
        default=True, description="run nodes --privileged; false uses the capability set for hosts that refuse it"
    )
    api_socket_dir: str = Field(
        default="~/.local/state/swarm-estate",
        description="a directory of yours (made 0700) where the first manager's engine socket appears as "
        "<dir>/<estate>/docker.sock: the swarm's API is reached through it, never over TCP",
    )
    l7_http_port: Port = Field(
        default=8080, description="L7 :80 of the first L7 node on 127.0.0.1 (next nodes: +1, +2…)"
    )
    l7_https_port: Port = Field(default=8443, description="L7 :443 of the first L7 node on 127.0.0.1 (next nodes: +1…)")
    preload_images: list[str] = Field(
        default_factory=list,
        description="images of the outer engine loaded into every node once its engine answers, as `kind load "
        "docker-image` does: for nodes that cannot pull (no registry access) or should not wait for a pull",
    )


class NfsExport(Strict):
    name: Name = Field(description="name the mounts, volumes and registry refer to")
    server: str = Field(description="NFS server address or DNS name")
    path: str = Field(pattern=r"^/", description="exported path on the server")
    version: Literal["3", "4", "4.1", "4.2"] = Field(default="4.1", description="NFS protocol version")
    options: list[str] = Field(default_factory=list, description="extra mount options")


class NfsMount(Strict):
    identity: ClassVar[str] = "target"

    export: Name = Field(description="which NFS export to mount")
    target: str = Field(pattern=r"^/", description="mount point on the node (e.g. /mnt/docker)")
    subpath: str = Field(default="", description="path below the export to mount")
    roles: list[Role] = Field(default_factory=lambda: ["manager", "worker"], description="node roles that mount it")


class NfsSpec(Strict):
    exports: list[NfsExport] = Field(default_factory=list, description="NFS exports the estate uses")
    mounts: list[NfsMount] = Field(default_factory=list, description="host mounts (fstab) on the nodes")
