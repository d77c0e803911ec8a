"""The platform stacks the model enables: the private registry and Portainer.

They are built in code as ImportedStacks, the same model a compose file imports into, and are
deployed by the same AppStack component: one set of conventions (names, labels, dnsrr behind
L7, NFS in mount specs) for everything that runs in the swarm.
"""

from __future__ import annotations

from .compose.apply import nfs_volume
from .compose.spec import (
    FileRef,
    ImportedStack,
    MountSpec,
    NetworkSpec,
    RestartPolicy,
    SecretSpec,
    ServiceSpec,
    UpdateConfig,
    VolumeSpec,
)
from .model import EstateSpec, Routing
from .model.proxy import RateLimit

REGISTRY_PORT = 5000
PORTAINER_PORT = 9000
AGENT_NETWORK = "agent_network"
# One `docker pull` is a manifest plus one request per layer, and a rolling update makes every
# node pull at once: the L7 default limit (sized for browsers) would throttle the registry.
REGISTRY_RATE_LIMIT = RateLimit(requests=5000, period="10s")
_RESTART = RestartPolicy(condition="any", delay=5 * 10**9)
# Single-replica services holding data on NFS: stop the old task before the new one mounts it.
_STOP_FIRST = UpdateConfig(parallelism=1, order="stop-first", failure_action="rollback")


def platform_stacks(spec: EstateSpec) -> dict[str, ImportedStack]:
    out = {}
    if spec.registry.enabled:
        out["registry"] = registry_stack(spec)
    if spec.portainer.enabled:
        out["portainer"] = portainer_stack(spec)
    return out


def _public(spec: EstateSpec) -> dict[str, NetworkSpec]:
    name = spec.public_network.name
    return {name: NetworkSpec(key=name, external=True)}


def registry_stack(spec: EstateSpec) -> ImportedStack:
    """DCCN's registry: `registry:2`, its storage on NFS, htpasswd auth from a Pulumi secret, and TLS
    at the L7 HAProxy (so nodes pull over HTTPS with a certificate they already trust)."""
    reg = spec.registry
    assert reg.dns_name and reg.nfs and reg.htpasswd_secret  # the model requires them when enabled
    public = spec.public_network.name
    routing = Routing(
        dns_names=[reg.dns_name],
        http_port=REGISTRY_PORT,
        replicas=1,
        check_uri="/",
        check_method="GET",
        rate_limit=REGISTRY_RATE_LIMIT,
        # nodes pull from anywhere (with the htpasswd credentials); pushes only from the operators' networks
        allow=[] if reg.public else spec.l7.operator_networks,
        allow_only_writes=True,
    )
    service = ServiceSpec(
        name="registry",
        image=reg.image,
        environment={
            "REGISTRY_HTTP_ADDR": f"0.0.0.0:{REGISTRY_PORT}",
            # Redirects and upload URLs must name the public HTTPS endpoint, not the task.
            "REGISTRY_HTTP_HOST": f"https://{reg.dns_name}",
            "REGISTRY_AUTH": "htpasswd",
            "REGISTRY_AUTH_HTPASSWD_REALM": f"{spec.name} registry",
            "REGISTRY_AUTH_HTPASSWD_PATH": "/run/secrets/htpasswd",
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/var/lib/registry",
        },
        networks={public: ()},
        mounts=(MountSpec("volume", "/var/lib/registry", "data"),),
        secrets=(FileRef("htpasswd", "htpasswd"),),
        replicas=1,
        endpoint_mode="dnsrr",
        restart_policy=_RESTART,
        update_config=_STOP_FIRST,
        routing=routing,
        route_port=REGISTRY_PORT,
    )
    return ImportedStack(
        name="registry",
        file="<platform: registry>",
        services={"registry": service},
        networks=_public(spec),
        volumes={"data": VolumeSpec(key="data", nfs=nfs_volume(spec, reg.nfs, reg.subpath))},
        configs={},
        secrets={"htpasswd": SecretSpec(key="htpasswd", config_key=reg.htpasswd_secret)},
        config_path=("registry",),
    )


def portainer_stack(spec: EstateSpec) -> ImportedStack:
    """Portainer's own swarm layout: an agent on every node, the server on a manager behind L7."""
    portainer = spec.portainer
    assert portainer.dns_name  # the model requires it when enabled
    public = spec.public_network.name
    agent = ServiceSpec(
        name="agent",
        image=portainer.agent_image,
        environment={"AGENT_CLUSTER_ADDR": "tasks.agent"},
        networks={AGENT_NETWORK: ()},
        mounts=(
            MountSpec("bind", "/var/run/docker.sock", "/var/run/docker.sock"),
            MountSpec("bind", "/var/lib/docker/volumes", "/var/lib/docker/volumes"),
        ),
        mode="global",
        constraints=("node.platform.os == linux",),
        restart_policy=_RESTART,
    )
    server = ServiceSpec(
        name="portainer",
        image=portainer.image,
        command=("-H", "tcp://tasks.agent:9001", "--tlsskipverify"),
        networks={AGENT_NETWORK: (), public: ()},
        mounts=(MountSpec("volume", "/data", "data"),),
        replicas=1,
        endpoint_mode="dnsrr",
        constraints=("node.role == manager",),
        restart_policy=_RESTART,
        update_config=_STOP_FIRST,
        routing=Routing(
            dns_names=[portainer.dns_name],
            http_port=PORTAINER_PORT,
            replicas=1,
            check_uri="/",
            allow=[] if portainer.public else spec.l7.operator_networks,
        ),
        route_port=PORTAINER_PORT,
    )
    # Without NFS the data volume is local to whichever manager runs the server.
    data = VolumeSpec(key="data", nfs=nfs_volume(spec, portainer.nfs, "portainer") if portainer.nfs else None)
    return ImportedStack(
        name="portainer",
        file="<platform: portainer>",
        services={"agent": agent, "portainer": server},
        networks={AGENT_NETWORK: NetworkSpec(key=AGENT_NETWORK, driver="overlay", attachable=True), **_public(spec)},
        volumes={"data": data},
        configs={},
        secrets={},
        config_path=("portainer",),
    )
