"""`swarm-estate:stacks:AppStack`: one imported stack as real docker provider resources.

Names follow `docker stack deploy` (`<stack>_<service>`, `<stack>_<network>`, the label
`com.docker.stack.namespace`), so `docker stack ls/services/ps` work for operators, while
Pulumi owns every object: preview shows property diffs and refresh sees drift.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from .compose.apply import volume_name
from .compose.spec import (
    IMAGE_LABEL,
    STACK_LABEL,
    ImportedStack,
    MountSpec,
    ServiceSpec,
    UpdateConfig,
    VolumeSpec,
    content_digest,
    content_name,
    swarm_secret_prefix,
)
from .config_secrets import SecretSource
from .render.compose import render_compose
from .swarm import ipam_config
from .units import service_duration

__all__ = ["AppStack", "AppStackArgs", "content_name"]


@dataclass(frozen=True)
class AppStackArgs:
    stack: ImportedStack  # the compose file with the estate applied; its name is the stack's namespace
    provider: docker.Provider  # the swarm's
    shared_networks: Mapping[str, docker.Network]  # the estate's overlays by name, haproxy-public included
    secrets: SecretSource


class AppStack(pulumi.ComponentResource):
    service_names: pulumi.Output[list[str]]
    network_names: pulumi.Output[list[str]]

    def __init__(self, name: str, args: AppStackArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("swarm-estate:stacks:AppStack", name, None, opts)
        stack = args.stack
        ns = stack.name
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        self.files = {f"stacks/{ns}/docker-compose.yml": render_compose(stack)}

        network_ids: dict[str, pulumi.Input[str]] = {}
        networks: list[docker.Network] = []
        for key, net in stack.private_networks().items():
            network = docker.Network(
                f"{name}-net-{key}",
                name=net.name or f"{ns}_{key}",
                driver="overlay",
                attachable=net.attachable,
                internal=net.internal,
                options=net.driver_opts or None,
                ipam_configs=[ipam_config(s) for s in net.subnets] or None,
                labels=[docker.NetworkLabelArgs(label=k, value=v) for k, v in {**net.labels, STACK_LABEL: ns}.items()],
                opts=child,
            )
            networks.append(network)
            network_ids[key] = network.id
        for key, net in stack.networks.items():
            if net.external:
                actual = net.name or key
                network_ids[key] = args.shared_networks[actual].id

        used_configs = {ref.source for s in stack.services.values() for ref in s.configs}
        configs: dict[str, docker.ServiceConfig] = {}
        for key, cfg in stack.configs.items():
            if key not in used_configs or cfg.content is None:
                continue
            configs[key] = docker.ServiceConfig(
                f"{name}-config-{key}-{content_digest(cfg.content)}",
                name=content_name(ns, key, cfg.content),
                data=base64.b64encode(cfg.content.encode()).decode(),
                labels=[
                    docker.ServiceConfigLabelArgs(label=k, value=v) for k, v in {**cfg.labels, STACK_LABEL: ns}.items()
                ],
                opts=child,
            )

        used_secrets = {ref.source for s in stack.services.values() for ref in s.secrets}
        secrets: dict[str, docker.Secret] = {}
        for key, sec in stack.secrets.items():
            if key not in used_secrets:
                continue
            if sec.config_key is not None:
                value = args.secrets.get(sec.config_key)
            else:
                value = pulumi.Output.secret(sec.file_content or "")
            secrets[key] = docker.Secret(
                swarm_secret_prefix(ns, key),
                data=value.apply(lambda v: base64.b64encode(v.encode()).decode()),
                labels=[docker.SecretLabelArgs(label=k, value=v) for k, v in {**sec.labels, STACK_LABEL: ns}.items()],
                opts=child,
            )

        services = []
        for svc_name, service in stack.services.items():
            services.append(
                docker.Service(
                    f"{name}-{svc_name}",
                    name=f"{ns}_{svc_name}",
                    labels=[
                        docker.ServiceLabelArgs(label=k, value=v)
                        for k, v in {**service.deploy_labels, STACK_LABEL: ns, IMAGE_LABEL: service.image}.items()
                    ],
                    mode=service_mode(service),
                    endpoint_spec=endpoint_spec(service),
                    update_config=update_args(service.update_config, docker.ServiceUpdateConfigArgs),
                    rollback_config=update_args(service.rollback_config, docker.ServiceRollbackConfigArgs),
                    task_spec=docker.ServiceTaskSpecArgs(
                        container_spec=container_spec(ns, service, stack, configs, secrets),
                        networks_advanceds=[
                            docker.ServiceTaskSpecNetworksAdvancedArgs(
                                id=network_ids[key], aliases=aliases(svc_name, al)
                            )
                            for key, al in service.effective_networks().items()
                        ],
                        log_driver=log_driver(service),
                        placement=placement(service),
                        resources=resources(service),
                        restart_policy=restart_policy(service),
                    ),
                    opts=child,
                )
            )
        self.service_names = pulumi.Output.all(*[s.name for s in services]).apply(list)
        self.network_names = pulumi.Output.all(*[n.name for n in networks]).apply(list)
        self.register_outputs({"service_names": self.service_names, "network_names": self.network_names})


# --- pure conversions: ServiceSpec -> provider Args ---------------------------------------------


def aliases(service: str, declared: tuple[str, ...]) -> list[str]:
    """As `docker stack deploy`: the file's aliases, then the compose service name, on every network the service
    joins, shared overlays included, so `conductor-ui` reaches `http://conductor-server:8080` as in the seed and
    an app reaches `db` of another stack over an overlay both join. (On a shared overlay two stacks' `web` answer
    to one name, as they do under Docker; `<stack>_<service>` is the unambiguous name there.)"""
    return [*[a for a in declared if a != service], service]


def log_driver(service: ServiceSpec) -> docker.ServiceTaskSpecLogDriverArgs | None:
    logging = service.logging
    if logging is None:
        return None
    if logging.driver is None:  # the compose import names the engines' driver (apply._log_drivers)
        raise ValueError(f"{service.name}: logging without a driver reached the AppStack")
    return docker.ServiceTaskSpecLogDriverArgs(name=logging.driver, options=logging.options or None)


def service_mode(service: ServiceSpec) -> docker.ServiceModeArgs:
    if service.mode == "global":
        return docker.ServiceModeArgs(global_=True)
    replicas = service.replicas if service.replicas is not None else 1
    return docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=replicas))


def endpoint_spec(service: ServiceSpec) -> docker.ServiceEndpointSpecArgs:
    ports = [
        docker.ServiceEndpointSpecPortArgs(
            target_port=p.target, published_port=p.published, protocol=p.protocol, publish_mode=p.mode
        )
        for p in service.ports
    ]
    return docker.ServiceEndpointSpecArgs(mode=service.endpoint_mode or "vip", ports=ports or None)


def _dur(ns: int | None) -> str | None:
    return None if ns is None else service_duration(ns)


def update_args(cfg: UpdateConfig | None, cls):
    if cfg is None:
        return None
    return cls(
        parallelism=cfg.parallelism,
        delay=_dur(cfg.delay),
        failure_action=cfg.failure_action,
        monitor=_dur(cfg.monitor),
        max_failure_ratio=None if cfg.max_failure_ratio is None else str(cfg.max_failure_ratio),
        order=cfg.order,
    )


def placement(service: ServiceSpec) -> docker.ServiceTaskSpecPlacementArgs | None:
    if not (service.constraints or service.preferences or service.max_replicas_per_node):
        return None
    return docker.ServiceTaskSpecPlacementArgs(
        constraints=list(service.constraints) or None,
        prefs=list(service.preferences) or None,
        max_replicas=service.max_replicas_per_node,
    )


def resources(service: ServiceSpec) -> docker.ServiceTaskSpecResourcesArgs | None:
    res = service.resources
    if res is None:
        return None
    limits = None
    if res.limit_nano_cpus is not None or res.limit_memory is not None:
        limits = docker.ServiceTaskSpecResourcesLimitsArgs(nano_cpus=res.limit_nano_cpus, memory_bytes=res.limit_memory)
    reservation = None
    if res.reserve_nano_cpus is not None or res.reserve_memory is not None or res.generic:
        discrete = [g for g in res.generic if g.partition("=")[2].isdigit()]
        named = [g for g in res.generic if g not in discrete]
        generic = (
            docker.ServiceTaskSpecResourcesReservationGenericResourcesArgs(
                discrete_resources_specs=discrete or None, named_resources_specs=named or None
            )
            if res.generic
            else None
        )
        reservation = docker.ServiceTaskSpecResourcesReservationArgs(
            nano_cpus=res.reserve_nano_cpus, memory_bytes=res.reserve_memory, generic_resources=generic
        )
    return docker.ServiceTaskSpecResourcesArgs(limits=limits, reservation=reservation)


# Swarm's restart defaults, spelled out. `docker stack deploy` leaves what the file omits unset and swarm
# applies these; the docker provider would send an omitted delay as 0 (restart at once, in a loop) and read
# it back as "0s", a diff on every preview.
RESTART_DEFAULTS = {"condition": "any", "delay": 5_000_000_000, "max_attempts": 0, "window": 0}


def restart_policy(service: ServiceSpec) -> docker.ServiceTaskSpecRestartPolicyArgs:
    rp = service.restart_policy
    given = {} if rp is None else {k: v for k, v in vars(rp).items() if v is not None}
    policy = {**RESTART_DEFAULTS, **given}
    return docker.ServiceTaskSpecRestartPolicyArgs(
        condition=policy["condition"],
        delay=_dur(policy["delay"]),
        max_attempts=policy["max_attempts"],
        window=_dur(policy["window"]),
    )


def mount(stack: str, m: MountSpec, volumes: Mapping[str, VolumeSpec]) -> docker.ServiceTaskSpecContainerSpecMountArgs:
    volume_options = None
    source = m.source
    if m.type == "volume":
        vol = volumes.get(m.source) if m.source else None
        # As `docker stack deploy`: stack-owned named volumes carry the namespace label; external and
        # anonymous ones do not.
        volume_labels = {} if vol is None or vol.external else {**vol.labels, STACK_LABEL: stack}
        labels = [
            docker.ServiceTaskSpecContainerSpecMountVolumeOptionsLabelArgs(label=k, value=v)
            for k, v in volume_labels.items()
        ] or None
        driver, driver_opts = None, None
        if vol is not None:
            source = volume_name(stack, vol)
            if vol.nfs is not None:
                # The NFS volume lives only in this mount spec: every node that runs a task creates
                # it on demand, and removing the service (or the whole stack) leaves both the
                # node-local volume object and the data on the NFS server alone.
                driver = "local"
                driver_opts = {"type": "nfs", "o": vol.nfs.options, "device": vol.nfs.device}
            elif vol.driver or vol.driver_opts:
                driver, driver_opts = vol.driver, vol.driver_opts or None
        volume_options = docker.ServiceTaskSpecContainerSpecMountVolumeOptionsArgs(
            driver_name=driver, driver_options=driver_opts, labels=labels, no_copy=m.no_copy or None
        )
    return docker.ServiceTaskSpecContainerSpecMountArgs(
        type=m.type,
        target=m.target,
        source=source,
        read_only=m.read_only or None,
        volume_options=volume_options,
        bind_options=docker.ServiceTaskSpecContainerSpecMountBindOptionsArgs(propagation=m.propagation)
        if m.propagation
        else None,
        tmpfs_options=docker.ServiceTaskSpecContainerSpecMountTmpfsOptionsArgs(
            size_bytes=m.tmpfs_size, mode=m.tmpfs_mode
        )
        if m.tmpfs_size is not None or m.tmpfs_mode is not None
        else None,
    )


def container_spec(
    ns: str,
    service: ServiceSpec,
    stack: ImportedStack,
    configs: Mapping[str, docker.ServiceConfig],
    secrets: Mapping[str, docker.Secret],
) -> docker.ServiceTaskSpecContainerSpecArgs:
    hc = service.healthcheck
    return docker.ServiceTaskSpecContainerSpecArgs(
        image=service.image,
        # compose `entrypoint` is the container's command and compose `command` its arguments.
        commands=list(service.entrypoint) if service.entrypoint is not None else None,
        args=list(service.command) if service.command is not None else None,
        env=dict(service.environment) or None,
        dir=service.working_dir,
        user=service.user,
        hostname=service.hostname,
        labels=[
            docker.ServiceTaskSpecContainerSpecLabelArgs(label=k, value=v)
            for k, v in {**service.labels, STACK_LABEL: ns}.items()
        ],
        mounts=[mount(ns, m, stack.volumes) for m in service.mounts] or None,
        configs=[
            docker.ServiceTaskSpecContainerSpecConfigArgs(
                config_id=configs[ref.source].id,
                config_name=configs[ref.source].name,
                file_name=ref.target,
                file_uid=ref.uid,
                file_gid=ref.gid,
                file_mode=ref.mode,
            )
            for ref in service.configs
        ]
        or None,
        secrets=[
            docker.ServiceTaskSpecContainerSpecSecretArgs(
                secret_id=secrets[ref.source].id,
                secret_name=secrets[ref.source].name,
                file_name=ref.target,
                file_uid=ref.uid,
                file_gid=ref.gid,
                file_mode=ref.mode,
            )
            for ref in service.secrets
        ]
        or None,
        healthcheck=docker.ServiceTaskSpecContainerSpecHealthcheckArgs(
            tests=list(hc.test),
            interval=_dur(hc.interval),
            timeout=_dur(hc.timeout),
            start_period=_dur(hc.start_period),
            retries=hc.retries,
        )
        if hc
        else None,
        stop_grace_period=_dur(service.stop_grace_period),
        stop_signal=service.stop_signal,
        hosts=[docker.ServiceTaskSpecContainerSpecHostArgs(host=h, ip=ip) for h, ip in service.extra_hosts] or None,
        cap_adds=list(service.cap_add) or None,
        cap_drops=list(service.cap_drop) or None,
        sysctl=dict(service.sysctls) or None,
        init=service.init,
        read_only=service.read_only,
        dns_config=docker.ServiceTaskSpecContainerSpecDnsConfigArgs(
            nameservers=list(service.dns),
            searches=list(service.dns_search) or None,
            options=list(service.dns_opt) or None,
        )
        if service.dns
        else None,
    )
