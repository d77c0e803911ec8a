"""Compose import: each stack's compose file + its stack config -> an ImportedStack, before any resource exists.

`import_stacks` reads every `stacks.<name>.compose`, interpolates it from `variables`, and applies
the estate: routing (the seed's service ticket), NFS-backed volumes and secret config keys. All
problems of all stacks are reported together, one line each, so one preview shows every fix.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from .compose_model import ComposeFile, ImportedStack, NetworkSpec, NfsVolume, ServiceSpec, VolumeSpec
from .compose_parse import parse_compose
from .model import EstateConfigError, EstateSpec, Route, StackSpec, config_path

# Platform stacks take these names when the model enables them.
PLATFORM_STACKS = ("registry", "portainer")

__all__ = ["ImportedStack", "import_stacks", "nfs_volume", "routes_of"]


def import_stacks(spec: EstateSpec, project_dir: Path) -> dict[str, ImportedStack]:
    problems: list[str] = []
    imported: dict[str, ImportedStack] = {}
    for name, stack in spec.stacks.items():
        where = config_path(("stacks", name, "compose"))
        if name in PLATFORM_STACKS and getattr(spec, name).enabled:
            problems.append(f"{config_path(('stacks', name))}: the name {name!r} belongs to the enabled platform stack")
            continue
        path = project_dir / stack.compose
        try:
            text = path.read_text()
        except OSError as exc:
            problems.append(
                f"{where}: cannot read {stack.compose} ({exc.strerror or exc}); paths are relative to the project"
            )
            continue
        compose, file_problems = parse_compose(text, stack.compose, path.parent, stack.variables)
        if file_problems:
            problems += file_problems
            continue
        result, stack_problems = apply_estate(spec, name, stack, compose)
        problems += stack_problems
        if result is not None:
            imported[name] = result
    if problems:
        raise EstateConfigError(problems)
    return imported


def nfs_volume(spec: EstateSpec, export_name: str, subpath: str) -> NfsVolume:
    """The `local` driver options that make every node mount the export on demand."""
    export = spec.nfs_export(export_name)
    device = export.path.rstrip("/") + ("/" + subpath.strip("/") if subpath.strip("/") else "")
    options = ",".join([f"addr={export.server}", f"nfsvers={export.version}", *export.options])
    return NfsVolume(server=export.server, device=f":{device}", options=options)


def apply_estate(
    spec: EstateSpec, name: str, stack: StackSpec, compose: ComposeFile
) -> tuple[ImportedStack | None, list[str]]:
    problems: list[str] = []
    warnings = list(compose.warnings)
    file = compose.file
    public = spec.public_network.name
    known_overlays = {public, *(o.name for o in spec.overlays)}
    networks = dict(compose.networks)
    if "default" not in networks and any(not s.networks for s in compose.services.values()):
        networks["default"] = NetworkSpec(key="default")
    for key, net in networks.items():
        actual = net.name or key
        if net.external and actual not in known_overlays:
            problems.append(
                f"{file}: networks.{key}: external network {actual!r} is not one the estate creates "
                f"(known: {', '.join(sorted(known_overlays))}); declare it under the estate's `overlays`"
            )
        if not net.external and actual == public:
            problems.append(
                f"{file}: networks.{key}: {public} is the estate's shared overlay: declare it external: true"
            )
    public_key = next((k for k, n in networks.items() if n.external and (n.name or k) == public), None)

    services = dict(compose.services)
    for svc_name, routing in stack.services.items():
        path = ("stacks", name, "services", svc_name)
        service = services.get(svc_name)
        if service is None:
            problems.append(f"{config_path(path)}: {file} has no service {svc_name!r} (it has {', '.join(services)})")
            continue
        replicas = routing.replicas if routing.replicas is not None else service.replicas
        if routing.replicas is not None and service.mode == "global":
            problems.append(f"{config_path((*path, 'replicas'))}: {svc_name} is a global service (one task per node)")
        changes: dict[str, object] = {"routing": routing, "replicas": replicas}
        if routing.dns_names:
            effective = len(spec.nodes) if service.mode == "global" else (replicas or 1)
            if effective > 1 and routing.check_uri is None:
                problems.append(
                    f"{config_path((*path, 'check_uri'))}: {effective} replicas (from {file}) need a health-check "
                    "URI, or HAProxy keeps sending requests to a replica that is down"
                )
            port = routing.http_port or _compose_port(service)
            if port is None:
                problems.append(
                    f"{config_path((*path, 'http_port'))}: give the HTTP port: {file} publishes "
                    f"{'several ports' if service.ports else 'no port'} for {svc_name}"
                )
            if service.ports:
                warnings.append(f"{file}: service {svc_name}: ports are not published: L7 routes it through {public}")
            if service.endpoint_mode == "vip":
                warnings.append(f"{file}: service {svc_name}: endpoint_mode vip replaced by dnsrr for L7 routing")
            if public_key is None:
                public_key = public
                networks[public] = NetworkSpec(key=public, external=True)
            nets = dict(service.effective_networks())
            nets.setdefault(public_key, ())
            changes.update(networks=nets, endpoint_mode="dnsrr", ports=(), route_port=port)
            for dns in routing.dns_names:
                if not (dns == spec.domain or dns.endswith("." + spec.domain)):
                    warnings.append(
                        f"{config_path((*path, 'dns_names'))}: {dns} is outside {spec.domain}: set "
                        f"_acme-challenge.{dns} as a CNAME into {spec.domain}'s ACME zone"
                    )
        services[svc_name] = dataclasses.replace(service, **changes)  # type: ignore[arg-type]

    volumes = dict(compose.volumes)
    exports = {e.name for e in spec.nfs.exports}
    for vol, nfs in stack.volumes.items():
        path = ("stacks", name, "volumes", vol)
        declared = volumes.get(vol)
        if declared is None:
            problems.append(f"{config_path(path)}: {file} declares no volume {vol!r}")
        elif nfs.nfs not in exports:
            problems.append(f"{config_path((*path, 'nfs'))}: NFS export {nfs.nfs!r} does not exist")
        elif declared.external or declared.driver or declared.driver_opts:
            problems.append(f"{config_path(path)}: {file} already gives {vol} a driver or marks it external")
        else:
            backing = nfs_volume(spec, nfs.nfs, nfs.subpath)
            volumes[vol] = dataclasses.replace(declared, nfs=backing)
            if not nfs.keep_on_removal:
                warnings.append(
                    f"{config_path((*path, 'keep_on_removal'))}: swarm-estate never deletes NFS data; removing "
                    f"the stack leaves {backing.device[1:]} on {backing.server} for you to delete"
                )

    secrets = dict(compose.secrets)
    for secret, key in stack.secrets.items():
        if secret not in secrets:
            problems.append(f"{config_path(('stacks', name, 'secrets', secret))}: {file} declares no secret {secret!r}")
        else:
            secrets[secret] = dataclasses.replace(secrets[secret], config_key=key, file_content=None)
    for secret, body in secrets.items():
        if body.file_content is None and body.config_key is None and not body.external:
            problems.append(
                f"{config_path(('stacks', name, 'secrets'))}: {file} secret {secret!r} has no content: map it to a "
                "secret config key here (pulumi config set --secret …)"
            )
    for svc_name, service in services.items():
        for kind, refs, declared in (
            ("configs", service.configs, compose.configs),
            ("secrets", service.secrets, secrets),
        ):
            for ref in refs:
                if ref.source in declared and declared[ref.source].external:
                    problems.append(
                        f"{file}: service {svc_name}: {kind}: {ref.source!r} is external, but a service needs its "
                        "Swarm id, which only Pulumi-managed objects have: give its content here instead"
                    )
    problems += _name_problems(name, compose)
    if problems:
        return None, problems
    result = ImportedStack(
        name=name,
        file=file,
        services=services,
        networks=networks,
        volumes=volumes,
        configs=dict(compose.configs),
        secrets=secrets,
        warnings=tuple(warnings),
    )
    return result, []


_SWARM_NAME = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9_.-]*[a-zA-Z0-9])?$")


def _name_problems(stack: str, compose: ComposeFile) -> list[str]:
    """Swarm names services `<stack>_<service>` (a DNS label: at most 63 characters) and configs and
    secrets `<stack>_<key>-<12 hex>` (at most 64): refuse what the engine would refuse mid-update."""
    out = []
    for svc in compose.services:
        full = f"{stack}_{svc}"
        if len(full) > 63 or not _SWARM_NAME.match(full):
            out.append(
                f"{compose.file}: service {svc}: the Swarm service name {full!r} must be at most 63 letters, "
                "digits, '-', '_' or '.'"
            )
    for kind, keys in (("configs", compose.configs), ("secrets", compose.secrets)):
        for key in keys:
            full = f"{stack}_{key}-0123456789ab"
            if len(full) > 64 or not _SWARM_NAME.match(full):
                out.append(
                    f"{compose.file}: {kind}.{key}: the Swarm name {stack}_{key}-<content hash> must be at most "
                    "64 letters, digits, '-', '_' or '.'"
                )
    return out


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
            out.append(
                Route(
                    stack=stack.name,
                    service=service.name,
                    dns_names=tuple(routing.dns_names),
                    port=service.route_port,
                    replicas=replicas,
                    routing=routing,
                )
            )
    return out
