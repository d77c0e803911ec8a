"""A routed service as the L7 layer sees it: the seed's ticket resolved against the compose file."""

from __future__ import annotations

from dataclasses import dataclass

from .stacks import Routing


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

    @property
    def swarm_service(self) -> str:
        """`docker stack deploy` naming, which Docker DNS resolves to every task (dnsrr)."""
        return f"{self.stack}_{self.service}"
