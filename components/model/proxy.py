"""Model of the shared overlays, the L7 HAProxy service inside the swarm and the L4 pair in front."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from .base import AUTONAME_SUFFIX, Duration, Labels, Name, Port, SecretRef, Strict, Violation, raise_if_any


class Overlay(Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", description="swarm-scoped overlay network name")
    subnet: IPv4Network | None = Field(
        default=None, description="fixed subnet (default: cut from the swarm address pool)"
    )
    attachable: bool = Field(default=True, description="standalone containers may attach (debugging, one-off jobs)")
    encrypted: bool = Field(default=False, description="IPsec-encrypt VXLAN traffic between nodes")


def _public_network() -> Overlay:
    return Overlay(name="haproxy-public", subnet=IPv4Network("10.10.0.0/22"))


class RateLimit(Strict):
    requests: PositiveInt = Field(description="requests allowed per client address within `period`")
    period: Duration = Field(default="10s", description="sliding window of the count")


class HealthCheck(Strict):
    inter: Duration = Field(default="2s", description="time between health checks of one backend server")
    rise: PositiveInt = Field(default=2, description="passing checks before a server is put in")
    fall: PositiveInt = Field(default=3, description="failing checks before a server is taken out")


class ContainerCheck(Strict):
    """Docker's health check of a container: a task that fails it `retries` times in a row is replaced."""

    interval: Duration = Field(default="5s", description="time between checks")
    timeout: Duration = Field(default="2s", description="a check slower than this fails (raise it on slow hosts)")
    retries: PositiveInt = Field(default=3, description="failed checks in a row before the task is unhealthy")
    start_period: Duration = Field(default="5s", description="failures right after start that do not count")

    @field_validator("interval", "timeout", "start_period")
    @classmethod
    def _docker_duration(cls, value: str) -> str:
        if value.endswith("d"):
            raise ValueError(f"{value!r}: Docker takes ms, s, m or h here, not days")
        return value


SELF_SIGNED_NAME = "self-signed"  # the generated certificate's file (l7.self_signed)
MAX_CERTIFICATE_NAME = 64 - len("l7_") - AUTONAME_SUFFIX  # the swarm secret is `l7_<name>-<suffix>`


class Certificate(Strict):
    name: Name = Field(description="file name of the PEM bundle in the L7 certificate directory")
    secret: SecretRef = Field(description="secret config key holding the PEM (certificate chain + private key)")


class Stats(Strict):
    enabled: bool = Field(
        default=True, description="expose the operator frontend (Prometheus /metrics and monitor URI)"
    )
    port: Port = Field(default=8404, description="port of the operator frontend inside the L7 task")
    publish: bool = Field(default=False, description="publish the operator port on the L7 nodes (host mode)")
    monitor_uri: str = Field(default="/healthz", pattern=r"^/", description="answers 200 while HAProxy runs")


class L7Spec(Strict):
    image: str = Field(default="haproxy:3.0", description="HAProxy image (official haproxy:<version> by default)")
    replicas: PositiveInt = Field(default=3, description="L7 tasks, at most one per labelled node")
    node_label: Labels = Field(
        default_factory=lambda: {"l7": "true"}, description="nodes carrying this label (key=value) run L7 tasks"
    )
    http_port: Port = Field(default=80, description="plain HTTP port published in host mode on L7 nodes")
    https_port: Port = Field(default=443, description="HTTPS port published in host mode on L7 nodes")
    certificates: list[Certificate] = Field(default_factory=list, description="TLS certificates, as secrets")
    self_signed: bool = Field(
        default=False, description="generate a self-signed certificate for the estate domain (dev)"
    )
    hsts_max_age: int = Field(default=63072000, ge=0, description="Strict-Transport-Security max-age in seconds")
    rate_limit: RateLimit | None = Field(
        default=None, description="default per-client request limit of routed services"
    )
    check: HealthCheck = Field(default_factory=HealthCheck, description="backend health check timing")
    container_check: ContainerCheck = Field(
        default_factory=ContainerCheck, description="Docker's health check of each L7 task (its monitor URI)"
    )
    dns_hold_valid: Duration = Field(default="2s", description="how long a resolved backend address is trusted")
    update_delay: Duration = Field(default="10s", description="pause between L7 tasks during a rolling update")
    stats: Stats = Field(default_factory=Stats, description="operator frontend")
    operator_networks: list[IPv4Network] = Field(
        default_factory=list,
        description="client networks operators work from: the platform UIs (Portainer, the registry's push side) "
        "answer only these, unless made public",
    )

    @model_validator(mode="after")
    def _one_label(self) -> L7Spec:
        problems: list[Violation] = []
        if len(self.node_label) != 1:
            problems.append(Violation(("node_label",), "must be exactly one key=value pair, e.g. l7=true"))
        if self.http_port == self.https_port:
            problems.append(Violation(("https_port",), f"http_port and https_port are both {self.http_port}: one "
                                      "host port is published once"))  # fmt: skip
        for i, cert in enumerate(self.certificates):
            if self.self_signed and cert.name == SELF_SIGNED_NAME:
                problems.append(Violation(("certificates", i, "name"), f"{SELF_SIGNED_NAME!r} is the name of the "
                                          "generated certificate (self_signed: true): choose another"))  # fmt: skip
            if len(cert.name) > MAX_CERTIFICATE_NAME:
                problems.append(Violation(("certificates", i, "name"), f"at most {MAX_CERTIFICATE_NAME} characters: "
                                          "it becomes the swarm secret l7_<name> plus an 8-character suffix, and swarm "
                                          "names have at most 64"))  # fmt: skip
        raise_if_any(problems)
        return self


class L4Node(Strict):
    name: Name = Field(description="host name of the L4 node")
    address: IPv4Address = Field(description="fixed address on the node network")
    hypervisor: Name | None = Field(default=None, description="libvirt: where the VM runs (default: spread)")
    ssh_user: str | None = Field(default=None, description="existing hosts: login user (default: ssh.user)")


class L4Spec(Strict):
    enabled: bool = Field(default=False, description="run an HAProxy + keepalived pair in front of the L7 nodes")
    virtual_ip: IPv4Address | None = Field(default=None, description="floating address moved by VRRP between the pair")
    nodes: list[L4Node] = Field(default_factory=list, description="exactly two nodes")
    vrrp_router_id: int = Field(default=51, ge=1, le=255, description="VRRP virtual router id, unique on the LAN")
    vrrp_auth_secret: SecretRef | None = Field(default=None, description="secret config key with the VRRP password")
    interface: str = Field(default="eth0", description="NIC that carries the virtual IP")
    check: HealthCheck = Field(
        default_factory=lambda: HealthCheck(inter="1s", rise=1, fall=1), description="L7 node health checks"
    )
    vcpu: PositiveInt = Field(default=2, description="virtual CPUs per L4 VM")
    memory_mib: PositiveInt = Field(default=2048, description="memory per L4 VM in MiB")
    disk_gib: PositiveInt = Field(default=10, description="root disk per L4 VM in GiB")
    balance: Literal["source"] = Field(default="source", description="L4 keeps a client on one L7 node")

    def sources(self) -> list[str]:
        """The addresses the L4 pair connects to the L7 from: its nodes' (and the virtual IP, should the kernel
        pick it as a source). The L7 takes a PROXY header from these and no one else."""
        found = {str(n.address) for n in self.nodes} | ({str(self.virtual_ip)} if self.virtual_ip else set())
        return sorted(found, key=lambda a: tuple(int(x) for x in a.split(".")))

    @model_validator(mode="after")
    def _pair(self) -> L4Spec:
        if not self.enabled:
            return self
        problems = []
        if len(self.nodes) != 2:
            problems.append(f"an L4 pair has exactly 2 nodes, {len(self.nodes)} given")
        if self.virtual_ip is None:
            problems.append("virtual_ip is required when the L4 pair is enabled")
        if self.vrrp_auth_secret is None:
            problems.append("vrrp_auth_secret is required: keepalived must not run VRRP unauthenticated")
        if problems:
            raise ValueError("; ".join(problems))
        return self
