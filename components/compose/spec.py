"""The typed stack model a compose file imports into, and the unit conversions Docker applies.

Everything here is plain data: the compose import fills it, the AppStack component turns it
into docker provider resources, and the platform stacks (registry, Portainer) build it in code.
Durations are nanoseconds, memory is bytes and CPUs are nano-CPUs, as the Swarm API counts them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ..model import Routing

STACK_LABEL = "com.docker.stack.namespace"
IMAGE_LABEL = "com.docker.stack.image"


@dataclass(frozen=True)
class PortSpec:
    target: int
    published: int | None = None
    protocol: str = "tcp"
    mode: str = "ingress"


@dataclass(frozen=True)
class MountSpec:
    """A service mount; for type=volume `source` is the compose volume key (None: anonymous)."""

    type: str
    target: str
    source: str | None = None
    read_only: bool = False
    no_copy: bool = False
    propagation: str | None = None
    tmpfs_size: int | None = None
    tmpfs_mode: int | None = None


@dataclass(frozen=True)
class FileRef:
    """A config or secret as a service sees it."""

    source: str
    target: str
    uid: str = "0"
    gid: str = "0"
    mode: int = 0o444


@dataclass(frozen=True)
class RestartPolicy:
    condition: str | None = None
    delay: int | None = None
    max_attempts: int | None = None
    window: int | None = None


@dataclass(frozen=True)
class UpdateConfig:
    parallelism: int | None = None
    delay: int | None = None
    failure_action: str | None = None
    monitor: int | None = None
    max_failure_ratio: float | None = None
    order: str | None = None


@dataclass(frozen=True)
class Resources:
    limit_nano_cpus: int | None = None
    limit_memory: int | None = None
    reserve_nano_cpus: int | None = None
    reserve_memory: int | None = None
    generic: tuple[str, ...] = ()


@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...] = ()
    interval: int | None = None
    timeout: int | None = None
    retries: int | None = None
    start_period: int | None = None


@dataclass(frozen=True)
class Logging:
    driver: str | None  # None: the engines' default driver (the estate fills it in, as the daemon would)
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    image: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    networks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ports: tuple[PortSpec, ...] = ()
    expose: tuple[int, ...] = ()
    mounts: tuple[MountSpec, ...] = ()
    configs: tuple[FileRef, ...] = ()
    secrets: tuple[FileRef, ...] = ()
    mode: str = "replicated"
    replicas: int | None = None
    endpoint_mode: str | None = None
    constraints: tuple[str, ...] = ()
    preferences: tuple[str, ...] = ()
    max_replicas_per_node: int | None = None
    restart_policy: RestartPolicy | None = None
    update_config: UpdateConfig | None = None
    rollback_config: UpdateConfig | None = None
    resources: Resources | None = None
    deploy_labels: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    logging: Logging | None = None
    healthcheck: Healthcheck | None = None
    hostname: str | None = None
    user: str | None = None
    working_dir: str | None = None
    stop_grace_period: int | None = None
    stop_signal: str | None = None
    extra_hosts: tuple[tuple[str, str], ...] = ()
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    sysctls: dict[str, str] = field(default_factory=dict)
    init: bool | None = None
    read_only: bool | None = None
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_opt: tuple[str, ...] = ()
    routing: Routing | None = None
    route_port: int | None = None

    def effective_networks(self) -> dict[str, tuple[str, ...]]:
        """`docker stack deploy` puts a service that names no network on the stack's `default`."""
        return self.networks or {"default": ()}


@dataclass(frozen=True)
class NetworkSpec:
    key: str
    external: bool = False
    name: str | None = None
    driver: str | None = None
    driver_opts: dict[str, str] = field(default_factory=dict)
    attachable: bool = False
    internal: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    subnets: tuple[str, ...] = ()


@dataclass(frozen=True)
class NfsVolume:
    server: str
    device: str
    options: str


@dataclass(frozen=True)
class VolumeSpec:
    key: str
    external: bool = False
    name: str | None = None
    driver: str | None = None
    driver_opts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    nfs: NfsVolume | None = None


@dataclass(frozen=True)
class ConfigSpec:
    """A compose config: its content (from a file or inline) or an existing Swarm config."""

    key: str
    content: str | None = None
    external: bool = False
    name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SecretSpec:
    """A compose secret: from a file, an existing Swarm secret, or a secret stack config key."""

    key: str
    file_content: str | None = None
    config_key: str | None = None
    external: bool = False
    name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ComposeFile:
    """One compose file after interpolation and normalisation, before the estate is applied."""

    file: str
    services: dict[str, ServiceSpec] = field(default_factory=dict)
    networks: dict[str, NetworkSpec] = field(default_factory=dict)
    volumes: dict[str, VolumeSpec] = field(default_factory=dict)
    configs: dict[str, ConfigSpec] = field(default_factory=dict)
    secrets: dict[str, SecretSpec] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImportedStack:
    """A stack ready to deploy: its compose model with the estate's routing, NFS and secrets applied."""

    name: str
    file: str
    services: dict[str, ServiceSpec]
    networks: dict[str, NetworkSpec]
    volumes: dict[str, VolumeSpec]
    configs: dict[str, ConfigSpec]
    secrets: dict[str, SecretSpec]
    warnings: tuple[str, ...] = ()
    # what the estate changed and why, for the reader of the rendered file (comment lines in its header)
    notes: tuple[str, ...] = ()
    # where the stack config declares its routing: ("stacks", <name>) for an application stack, ("registry",) or
    # ("portainer",) for a platform stack
    config_path: tuple[str | int, ...] = ()

    def routing_path(self, service: str) -> tuple[str | int, ...]:
        return (*self.config_path, "services", service) if self.config_path[:1] == ("stacks",) else self.config_path

    def private_networks(self) -> dict[str, NetworkSpec]:
        used = {n for s in self.services.values() for n in s.effective_networks()}
        return {k: n for k, n in self.networks.items() if not n.external and k in used}




def swarm_secret_prefix(stack: str, key: str) -> str:
    """The Pulumi resource name of a swarm secret, which is also its swarm name before the provider's suffix.

    Secrets get no name of the program's choosing: a name derived from the value would put a hash of the
    secret in resource names and logs. The provider's own names replace create-before-delete, so a new value
    reaches the services before the old secret goes, and the names stay readable in previews."""
    return f"{stack}_{key}"


def content_digest(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()[:12]


def content_name(stack: str, key: str, content: str) -> str:
    """Swarm configs are immutable: a new content needs a new name. Hashing the content gives that name, and
    the same hash in the Pulumi resource's name makes a new content a new resource: Pulumi creates it, rolls
    the services onto it and deletes the old one last. (Replacing one resource would not do: the docker
    provider deletes a resource with a name of the program's choosing before creating its replacement, and
    swarm refuses to delete a config a service uses.) An unchanged file never restarts anything."""
    return f"{stack}_{key}-{content_digest(content)}"
