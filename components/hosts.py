"""Hosts layer: every node becomes a bootstrapped Docker host, whatever the substrate."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command as command

from .model import Node


@dataclass(frozen=True)
class HostRecord:
    """What the swarm layer needs of one node, whatever the substrate made it from.

    `connection` reaches the host over SSH (libvirt, existing); `container` names the
    docker-in-docker node container whose engine is reached with `docker exec` (docker
    substrate). `ready` holds the resources that finish the bootstrap: a join must depend
    on them, never on a sleep.
    """

    node: Node
    connection: command.remote.ConnectionArgs | None
    container: str | None
    ready: tuple[pulumi.Resource, ...]
