"""What the estate publishes, and where: the ports it holds on the swarm nodes (the swarm's, sshd's, the L7's in
host mode), the docker substrate's publications on the outer engine's host and its API socket, and the ports the
stacks publish themselves, each checked against the others before any resource, naming both owners."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Violation, config_path

if TYPE_CHECKING:
    from .estate import EstateSpec
    from .stacks import TcpRoute

MAX_UNIX_SOCKET_PATH = 107  # sun_path holds 108 bytes, the last a NUL


@dataclass(frozen=True)
class HostPort:
    """A port the estate holds on the swarm nodes, and who holds it (for messages naming both owners)."""

    port: int
    protocol: str
    owner: str
    path: tuple[str | int, ...]  # where the stack config sets it
    l7: str = ""  # the name of the L7 publication, in host mode on the L7 nodes ("": held by the swarm or sshd)


def host_ports(spec: EstateSpec) -> list[HostPort]:
    """Every port the estate itself holds on the swarm nodes: the swarm's own, sshd's, and what the L7
    publishes in host mode on its nodes (HTTP, HTTPS, stats, each TCP route). Stacks publish around them."""
    swarm_only = ("swarm",)
    out = [
        HostPort(2377, "tcp", "swarm management (2377/tcp)", swarm_only),
        HostPort(7946, "tcp", "swarm gossip (7946/tcp)", swarm_only),
        HostPort(7946, "udp", "swarm gossip (7946/udp)", swarm_only),
        HostPort(spec.swarm.data_path_port, "udp", f"the swarm data path ({spec.swarm.data_path_port}/udp)",
                 ("swarm", "data_path_port")),
    ]  # fmt: skip
    if spec.substrate != "docker":  # docker-in-docker nodes are reached with `docker exec`, not SSH
        out.append(HostPort(spec.ssh.port, "tcp", f"sshd ({spec.ssh.port}/tcp)", ("ssh", "port")))
    out += [
        HostPort(spec.l7.http_port, "tcp", "the L7 HTTP port", ("l7", "http_port"), l7="http"),
        HostPort(spec.l7.https_port, "tcp", "the L7 HTTPS port", ("l7", "https_port"), l7="https"),
    ]
    if spec.l7.stats.enabled and spec.l7.stats.publish:
        out.append(HostPort(spec.l7.stats.port, "tcp", "the L7 stats port", ("l7", "stats", "port"), l7="stats"))
    for stack, service, i, route in tcp_routes(spec):
        path = ("stacks", stack, "services", service, "tcp", i, "published")
        owner = f"the L7's TCP route to {stack}/{service}:{route.port}"
        out.append(HostPort(route.published, "tcp", owner, path, l7=f"tcp{route.published}"))
    return out


def tcp_routes(spec: EstateSpec) -> list[tuple[str, str, int, TcpRoute]]:
    """(stack, service, index, route) of every TCP port the stack config routes through the L7."""
    return [
        (stack, service, i, route)
        for stack, spec in spec.stacks.items()
        for service, routing in spec.services.items()
        for i, route in enumerate(routing.tcp)
    ]


def port_violations(spec: EstateSpec) -> list[Violation]:
    """The L7's host ports must not collide with each other or the swarm's; nor may the docker substrate's
    publications on the outer engine's host (one range per L7 node)."""
    out = []
    held: dict[tuple[int, str], HostPort] = {}
    for claim in host_ports(spec):
        key = (claim.port, claim.protocol)
        if key in held and claim.l7:
            first = held[key]
            where = f" ({config_path(first.path)})" if first.l7 else ""
            out.append(Violation(claim.path, f"{claim.owner} ({claim.port}/{claim.protocol}) clashes with "
                                 f"{first.owner}{where} on the L7 nodes: one host port can be published "
                                 "once"))  # fmt: skip
        held.setdefault(key, claim)
    if spec.substrate == "docker":
        out += _docker_host_violations(spec)
    return out


def _docker_host_violations(spec: EstateSpec) -> list[Violation]:
    """The docker substrate's L7 ports on the outer engine's host, and its API socket on this machine."""
    docker = spec.docker
    count = max(1, len(spec.l7_nodes()))
    ranges = [
        (("docker", "l7_http_port"), docker.l7_http_port, count, "the L7 HTTP ports"),
        (("docker", "l7_https_port"), docker.l7_https_port, count, "the L7 HTTPS ports"),
    ]
    out = []
    if not docker.engine_host.startswith("unix://"):
        out.append(Violation(("docker", "engine_host"), f"{docker.engine_host}: the node containers must run on "
                             "this machine's engine (unix://…): their swarm API socket is shared through a "
                             "directory here (docker.api_socket_dir), never over TCP"))  # fmt: skip
    socket = docker.api_socket(spec.name)
    if len(socket.encode()) > MAX_UNIX_SOCKET_PATH:
        rule = (f"{socket} is {len(socket.encode())} bytes, more than a unix socket path may have "
                f"({MAX_UNIX_SOCKET_PATH}): choose a shorter directory")
        out.append(Violation(("docker", "api_socket_dir"), rule))
    for i, (path, start, length, what) in enumerate(ranges):
        if start + length - 1 > 65535:
            out.append(Violation(path, f"{what} run from {start} to {start + length - 1}, past 65535"))
        for _, other_start, other_length, other in ranges[:i]:
            if start < other_start + other_length and other_start < start + length:
                span = f"{start}-{start + length - 1}" if length > 1 else str(start)
                out.append(Violation(path, f"{what} ({span} on the engine's host) overlap {other}: one host "
                                     "port can be published once; move one of them"))  # fmt: skip
    return out


@dataclass(frozen=True)
class Publication:
    """A port a stack's service publishes itself (not through the L7), and where its file says so."""

    stack: str
    service: str
    port: int
    protocol: str
    mode: str  # ingress: on every node; host: on the nodes running a task
    where: str  # `<file>: service <name>: ports`

    @property
    def shown(self) -> str:
        return f"{self.port}/{self.protocol} ({self.mode} mode)"


def port_rules(spec: EstateSpec, publications: list[Publication]) -> tuple[list[str], list[str]]:
    """(errors, warnings): every port a stack publishes, against the ports the estate holds on the nodes (the
    swarm's, sshd's, the L7's in host mode: HTTP, HTTPS, stats, TCP routes) and against the other stacks'. Swarm
    refuses such a clash only at `up`, with half the estate updated; here both owners are named up front."""
    errors, warnings = [], []
    held = {(h.port, h.protocol): h for h in reversed(spec.host_ports())}
    for pub in publications:
        claim = held.get((pub.port, pub.protocol))
        if claim is None:
            continue
        if claim.l7:
            reach = ("ingress mode publishes it on every node, the L7 nodes included" if pub.mode == "ingress"
                     else "host mode would take it on any L7 node a task lands on")  # fmt: skip
            errors.append(f"{pub.where}: {pub.shown} clashes with {claim.owner} ({config_path(claim.path)}), "
                          f"which the L7 publishes in host mode on its nodes: {reach}; publish another port, or "
                          "route the service through the L7")  # fmt: skip
        else:
            errors.append(f"{pub.where}: {pub.shown} is {claim.owner}, which every node needs for the swarm "
                          "itself; publish another port")  # fmt: skip
    seen: dict[tuple[int, str], Publication] = {}
    for pub in publications:
        key = (pub.port, pub.protocol)
        first = seen.setdefault(key, pub)
        if first is pub or (first.stack, first.service) == (pub.stack, pub.service):
            continue
        both = f"{pub.where}: {pub.shown} is also published by {first.where.removesuffix(': ports')} as {first.shown}"
        if "ingress" in (pub.mode, first.mode):
            errors.append(f"{both}: a port in ingress mode is taken on every node, so Swarm refuses the second")
        else:
            warnings.append(f"{both}: both in host mode, so Swarm never places the two on one node (tasks stay "
                            "pending when every node already runs the other)")  # fmt: skip
    return errors, warnings
