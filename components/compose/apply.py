"""Compose import: each stack's compose file + its stack config -> an ImportedStack, before any resource exists.

`import_stacks` reads every `stacks.<name>.compose`, interpolates it from `variables`, and applies
the estate: routing (the seed's service ticket), NFS-backed volumes and secret config keys. All
problems of all stacks are reported together, one line each, so one preview shows every fix.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from ..model import EstateConfigError, EstateSpec, Route, StackSpec
from .parse import parse_compose
from .problems import Problems
from .spec import ComposeFile, ImportedStack, NetworkSpec, NfsVolume, SecretSpec, ServiceSpec, VolumeSpec

# Platform stacks take these names when the model enables them.
PLATFORM_STACKS = ("registry", "portainer")

__all__ = ["ImportedStack", "import_stacks", "nfs_volume", "routes_of"]


def import_stacks(spec: EstateSpec, project_dir: Path) -> dict[str, ImportedStack]:
    problems = Problems()
    imported: dict[str, ImportedStack] = {}
    for name, stack in spec.stacks.items():
        config = problems.in_config("stacks", name)
        if name in PLATFORM_STACKS and getattr(spec, name).enabled:
            config.error(f"the name {name!r} belongs to the enabled platform stack")
            continue
        path = project_dir / stack.compose
        try:
            text = path.read_text()
        except OSError as exc:
            config.at("compose").error(
                f"cannot read {stack.compose} ({exc.strerror or exc}); paths are relative to the project"
            )
            continue
        compose, file_problems = parse_compose(text, stack.compose, path.parent, stack.variables)
        if file_problems:
            problems.errors.extend(file_problems)
            continue
        result = apply_estate(spec, name, stack, compose, problems)
        if result is not None:
            imported[name] = result
    if problems.errors:
        raise EstateConfigError(problems.errors)
    return imported


def nfs_volume(spec: EstateSpec, export_name: str, subpath: str) -> NfsVolume:
    """The `local` driver options that make every node mount the export on demand."""
    export = spec.nfs_export(export_name)
    device = export.path.rstrip("/") + ("/" + subpath.strip("/") if subpath.strip("/") else "")
    options = ",".join([f"addr={export.server}", f"nfsvers={export.version}", *export.options])
    return NfsVolume(server=export.server, device=f":{device}", options=options)


@dataclass
class _Context:
    """One stack being applied to the estate; problems are reported against its file or its stack config."""

    spec: EstateSpec
    name: str
    stack: StackSpec
    compose: ComposeFile
    in_file: Problems
    in_config: Problems

    @property
    def file(self) -> str:
        return self.compose.file


def apply_estate(
    spec: EstateSpec, name: str, stack: StackSpec, compose: ComposeFile, problems: Problems
) -> ImportedStack | None:
    """The compose model plus the stack config: routing, NFS volumes, secret keys, shared overlays.
    None when `problems` gained an error."""
    mine = Problems()  # this stack's own lines, added to `problems` at the end
    ctx = _Context(spec, name, stack, compose, mine.in_file(compose.file), mine.in_config("stacks", name))
    networks = _networks(ctx)
    services = _route(ctx, networks)
    volumes = _volumes(ctx)
    secrets = _secrets(ctx, services)
    _check_names(ctx)
    problems.errors.extend(mine.errors)
    if mine.errors:
        return None
    return ImportedStack(
        name=name,
        file=compose.file,
        services=services,
        networks=networks,
        volumes=volumes,
        configs=dict(compose.configs),
        secrets=secrets,
        warnings=(*compose.warnings, *mine.warnings),
        config_path=("stacks", name),
    )


def _networks(ctx: _Context) -> dict[str, NetworkSpec]:
    """External networks must be overlays the estate creates; everything else is the stack's own."""
    public = ctx.spec.public_network.name
    known = {public, *(o.name for o in ctx.spec.overlays)}
    networks = dict(ctx.compose.networks)
    if "default" not in networks and any("default" in s.effective_networks() for s in ctx.compose.services.values()):
        networks["default"] = NetworkSpec(key="default")
    for key, net in networks.items():
        actual = net.name or key
        if net.external and actual not in known:
            ctx.in_file.at("networks", key).error(
                f"external network {actual!r} is not one the estate creates "
                f"(known: {', '.join(sorted(known))}); declare it under the estate's `overlays`"
            )
        if not net.external and actual in known:
            ctx.in_file.at("networks", key).error(
                f"{actual} is one of the estate's shared overlays: declare it external: true"
            )
    return networks


def _route(ctx: _Context, networks: dict[str, NetworkSpec]) -> dict[str, ServiceSpec]:
    """The seed's rule for a routed service: on haproxy-public, endpoint_mode dnsrr, no published port."""
    public = ctx.spec.public_network.name
    public_key = next((k for k, n in networks.items() if n.external and (n.name or k) == public), None)
    services = dict(ctx.compose.services)
    for svc_name, routing in ctx.stack.services.items():
        path = ("services", svc_name)
        service = services.get(svc_name)
        if service is None:
            ctx.in_config.at(*path).error(f"{ctx.file} has no service {svc_name!r} (it has {', '.join(services)})")
            continue
        replicas = routing.replicas if routing.replicas is not None else service.replicas
        if routing.replicas is not None and service.mode == "global":
            ctx.in_config.at(*path, "replicas").error(f"{svc_name} is a global service (one task per node)")
        changes: dict[str, object] = {"routing": routing, "replicas": replicas}
        if routing.dns_names:
            port = routing.http_port or _compose_port(service)
            if port is None:
                ctx.in_config.at(*path, "http_port").error(
                    f"give the HTTP port: {ctx.file} publishes {'several ports' if service.ports else 'no port'} "
                    f"for {svc_name}",
                )
            if service.ports:
                ctx.in_file.at("services", svc_name).warn(f"ports are not published: L7 routes it via {public}")
            if service.endpoint_mode == "vip":
                ctx.in_file.at("services", svc_name).warn("endpoint_mode vip replaced by dnsrr for L7")
            if public_key is None:
                public_key = public
                networks[public] = NetworkSpec(key=public, external=True, name=public)
            nets = {**service.effective_networks()}
            nets.setdefault(public_key, ())
            changes.update(networks=nets, endpoint_mode="dnsrr", ports=(), route_port=port)
        services[svc_name] = dataclasses.replace(service, **changes)  # type: ignore[arg-type]
    return services


def _volumes(ctx: _Context) -> dict[str, VolumeSpec]:
    volumes = dict(ctx.compose.volumes)
    exports = {e.name for e in ctx.spec.nfs.exports}
    for vol, nfs in ctx.stack.volumes.items():
        path = ("volumes", vol)
        declared = volumes.get(vol)
        if declared is None:
            ctx.in_config.at(*path).error(f"{ctx.file} declares no volume {vol!r}")
        elif nfs.nfs not in exports:
            ctx.in_config.at(*path, "nfs").error(f"NFS export {nfs.nfs!r} does not exist")
        elif declared.external or declared.driver or declared.driver_opts:
            ctx.in_config.at(*path).error(f"{ctx.file} already gives {vol} a driver or marks it external")
        else:
            backing = nfs_volume(ctx.spec, nfs.nfs, nfs.subpath)
            volumes[vol] = dataclasses.replace(declared, nfs=backing)
            if not nfs.keep_on_removal:
                ctx.in_config.at(*path, "keep_on_removal").warn(
                    f"swarm-estate never deletes NFS data; removing the stack leaves {backing.device[1:]} on "
                    f"{backing.server} for you to delete"
                )
    return volumes


def _secrets(ctx: _Context, services: dict[str, ServiceSpec]) -> dict[str, SecretSpec]:
    secrets = dict(ctx.compose.secrets)
    for secret, key in ctx.stack.secrets.items():
        if secret not in secrets:
            ctx.in_config.at("secrets", secret).error(f"{ctx.file} declares no secret {secret!r}")
        else:
            # The stack config wins over the file's own source (a local dev file, or external).
            secrets[secret] = dataclasses.replace(
                secrets[secret], config_key=key, file_content=None, external=False, name=None
            )
    for secret, body in secrets.items():
        if body.file_content is None and body.config_key is None and not body.external:
            ctx.in_config.at("secrets").error(
                f"{ctx.file} secret {secret!r} has no content: map it to a secret config key here "
                "(pulumi config set --secret …)",
            )
    declared_by_kind = {"configs": ctx.compose.configs, "secrets": secrets}
    for svc_name, service in services.items():
        for kind, refs in (("configs", service.configs), ("secrets", service.secrets)):
            declared = declared_by_kind[kind]
            for ref in refs:
                if ref.source in declared and declared[ref.source].external:
                    ctx.in_file.at("services", svc_name, kind).error(
                        f"{ref.source!r} is external, but a service needs its Swarm id, which only Pulumi-managed "
                        "objects have: give its content instead"
                    )
    return secrets


_SWARM_NAME = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9_.-]*[a-zA-Z0-9])?$")


def _check_names(ctx: _Context) -> None:
    """Swarm names services `<stack>_<service>` (a DNS label: at most 63 characters) and configs and
    secrets `<stack>_<key>-<12 hex>` (at most 64): refuse what the engine would refuse mid-update."""
    stack = ctx.name
    for svc in ctx.compose.services:
        full = f"{stack}_{svc}"
        if len(full) > 63 or not _SWARM_NAME.match(full):
            ctx.in_file.at("services", svc).error(
                f"the Swarm service name {full!r} must be at most 63 letters, digits, '-', '_' or '.'"
            )
    for kind, keys in (("configs", ctx.compose.configs), ("secrets", ctx.compose.secrets)):
        for key in keys:
            full = f"{stack}_{key}-0123456789ab"
            if len(full) > 64 or not _SWARM_NAME.match(full):
                ctx.in_file.at(kind, key).error(
                    f"the Swarm name {stack}_{key}-<content hash> must be at most 64 letters, digits, '-', '_' or '.'"
                )


def _compose_port(service: ServiceSpec) -> int | None:
    targets = {p.target for p in service.ports}
    return targets.pop() if len(targets) == 1 else None


def volume_name(stack: str, volume: VolumeSpec) -> str:
    """`docker stack deploy` naming: <stack>_<key>, unless the file names the volume itself."""
    return volume.name or (volume.key if volume.external else f"{stack}_{volume.key}")


def routes_of(spec: EstateSpec, stacks: dict[str, ImportedStack]) -> list[Route]:
    out = []
    for stack in stacks.values():
        for service in stack.services.values():
            routing = service.routing
            if routing is None or not routing.dns_names or service.route_port is None:
                continue
            replicas = len(spec.nodes) if service.mode == "global" else (service.replicas or 1)
            if service.mode == "global":
                replicas_from = "global mode: one per node"
            elif routing.replicas is not None:
                replicas_from = "set here"
            else:
                replicas_from = f"from {stack.file}"
            out.append(
                Route(
                    stack=stack.name,
                    service=service.name,
                    dns_names=tuple(routing.dns_names),
                    port=service.route_port,
                    replicas=replicas,
                    routing=routing,
                    path=stack.routing_path(service.name),
                    replicas_from=replicas_from,
                )
            )
    return out
