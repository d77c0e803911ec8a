"""A routed service as the L7 layer sees it: the seed's ticket resolved against the compose file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Violation
from .stacks import Routing

if TYPE_CHECKING:
    from .estate import EstateSpec


@dataclass(frozen=True)
class Route:
    """One swarm service reachable through L7 under one or more public names.

    Produced by the stacks layer (compose file + stack config routing) and by the platform
    stacks; consumed by the L7 renderer. `replicas` is the effective count (override, else
    compose, else 1) and `port` the effective HTTP port (override, else compose).
    """

    stack: str
    service: str
    dns_names: tuple[str, ...]
    port: int
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


def route_rules(spec: EstateSpec, routes: list[Route]) -> tuple[list[Violation], list[Violation]]:
    """(errors, warnings) of the routes as they will be served: replica counts and ports resolved from the compose
    files, the platform stacks' included. Checked before any resource, with the other rules."""
    errors, warnings = [], []
    for route in routes:
        if route.replicas > 1 and route.routing.check_uri is None:
            rule = (f"{route.replicas} replicas ({route.replicas_from}) need a health-check URI, "
                    "or HAProxy keeps sending requests to a replica that is down")
            errors.append(Violation((*route.path, "check_uri"), rule))
        names = "dns_names" if route.path[:1] == ("stacks",) else "dns_name"
        for i, dns in enumerate(route.dns_names):
            if not (dns == spec.domain or dns.endswith("." + spec.domain)):
                where = (*route.path, names, i) if names == "dns_names" else (*route.path, names)
                advice = (f"set _acme-challenge.{dns} as a CNAME into {spec.domain}'s ACME zone, "
                          "or no valid certificate can be issued")
                warnings.append(Violation(where, f"{dns} is outside {spec.domain}: {advice}"))
    return errors, warnings
