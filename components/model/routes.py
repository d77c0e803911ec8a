"""A routed service as the L7 layer sees it: the seed's ticket resolved against the compose file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Violation
from .stacks import Routing

if TYPE_CHECKING:
    from .estate import EstateSpec


SLOT_STEP = 10
# Above 8192 bytes HAProxy advises against DNS over UDP, and Docker's embedded DNS answers over UDP only.
MAX_DNS_PAYLOAD = 8192


def template_slots(replicas: int) -> int:
    """Server slots the L7 gives a backend: twice the declared replicas, rounded up to a multiple of 10.

    A rolling update of the service (start-first, any parallelism up to the whole service) has at
    most 2 x replicas tasks in Docker's DNS answer at once, and every one of them must find a
    slot or new tasks would take no traffic until old ones leave. Unused slots cost nothing: they
    sit in maintenance until DNS gives them an address. Rounding up keeps the L7 config (and so
    the L7 tasks) untouched when a service is scaled within its step: 1 to 5 replicas share 10
    slots. Scaling by hand (`docker service scale`) past the slots is picked up at the next `up`.
    """
    return -(-2 * replicas // SLOT_STEP) * SLOT_STEP


def dns_answer_bytes(swarm_service: str, slots: int) -> int:
    """Docker DNS's answer for a full backend: 12 bytes of header, the question (name + 6), 16 bytes per A
    record (compressed name pointer) and an 11-byte OPT record."""
    return 12 + len(swarm_service) + 6 + 16 * slots + 11


@dataclass(frozen=True)
class Route:
    """One swarm service reachable through L7 under one or more public names.

    Produced by the stacks layer (compose file + stack config routing) and by the platform
    stacks; consumed by the L7 renderer. `replicas` is the effective count (override, else
    compose, else 1) and `port` the effective HTTP port (override, else compose). Its TCP ports are
    `routing.tcp`.
    """

    stack: str
    service: str
    dns_names: tuple[str, ...]
    port: int | None  # the HTTP port served under `dns_names`; None for a service routed only as TCP
    replicas: int
    routing: Routing
    # where the stack config declares this routing: ("stacks", <stack>, "services", <service>) for an application
    # stack, ("registry",) or ("portainer",) for a platform stack
    path: tuple[str | int, ...] = ()
    # why `replicas` is what it is, for messages: "from <compose file>", "set here" or "global mode: one per node"
    replicas_from: str = ""

    @property
    def swarm_service(self) -> str:
        """`docker stack deploy` naming, which Docker DNS resolves to every task (dnsrr)."""
        return f"{self.stack}_{self.service}"

    @property
    def slots(self) -> int:
        return template_slots(self.replicas)

    @property
    def dns_answer_bytes(self) -> int:
        return dns_answer_bytes(self.swarm_service, self.slots)


def route_rules(spec: EstateSpec, routes: list[Route]) -> tuple[list[Violation], list[Violation]]:
    """(errors, warnings) of the routes as they will be served: replica counts and ports resolved from the compose
    files, the platform stacks' included. Checked before any resource, with the other rules."""
    errors, warnings = [], []
    for route in routes:
        if route.dns_names and route.replicas > 1 and route.routing.check_uri is None:
            rule = (f"{route.replicas} replicas ({route.replicas_from}) need a health-check URI, "
                    "or HAProxy keeps sending requests to a replica that is down")
            errors.append(Violation((*route.path, "check_uri"), rule))
        if route.dns_answer_bytes > MAX_DNS_PAYLOAD:
            most = max(r for r in range(1, route.replicas) if dns_answer_bytes(route.swarm_service, template_slots(r))
                       <= MAX_DNS_PAYLOAD)  # fmt: skip
            rule = (f"{route.replicas} replicas ({route.replicas_from}) need a DNS answer of {route.dns_answer_bytes} "
                    f"bytes during a rolling update, more than the L7 can take from Docker's DNS over UDP "
                    f"({MAX_DNS_PAYLOAD}): at most {most} replicas per routed service")  # fmt: skip
            errors.append(Violation((*route.path, "replicas"), rule))
        names = "dns_names" if route.path[:1] == ("stacks",) else "dns_name"
        for i, dns in enumerate(route.dns_names):
            if not (dns == spec.domain or dns.endswith("." + spec.domain)):
                where = (*route.path, names, i) if names == "dns_names" else (*route.path, names)
                advice = (f"set _acme-challenge.{dns} as a CNAME into {spec.domain}'s ACME zone, "
                          "or no valid certificate can be issued")
                warnings.append(Violation(where, f"{dns} is outside {spec.domain}: {advice}"))
    return errors, warnings
