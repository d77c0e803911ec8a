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

from ..model import EstateConfigError, EstateSpec, Route, Routing, StackSpec, config_path
from ..model.hosts import unknown_log_options
from ..model.ports import Publication
from .parse import parse_compose
from .problems import Problems
from .spec import (
    ComposeFile,
    ImportedStack,
    Logging,
    NetworkSpec,
    NfsVolume,
    PortSpec,
    SecretSpec,
    ServiceSpec,
    VolumeSpec,
)

# Platform stacks take these names when the model enables them.
PLATFORM_STACKS = ("registry", "portainer")

__all__ = ["ImportedStack", "collect_stacks", "import_stacks", "nfs_volume", "publications_of", "routes_of"]


def import_stacks(spec: EstateSpec, project_dir: Path) -> dict[str, ImportedStack]:
    """Every application stack, or EstateConfigError with every problem of every file."""
    problems = Problems()
    imported = collect_stacks(spec, project_dir, problems)
    if problems.errors:
        raise EstateConfigError(problems.errors)
    return imported


def collect_stacks(spec: EstateSpec, project_dir: Path, problems: Problems) -> dict[str, ImportedStack]:
    """Read, parse and apply every `stacks.<name>` to the estate, adding what is wrong to `problems` and going on:
    a file with errors is still applied as far as it parsed, so the estate-level checks (external networks,
    secrets, routes, ports) of every file appear in the same run. The result is deployable only when `problems`
    gained no error."""
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
        problems.errors.extend(file_problems)
        if file_problems and not compose.services:
            continue  # not YAML, or no service parsed: nothing for the estate to check
        imported[name] = apply_estate(spec, name, stack, compose, problems)
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
    notes: list[str]  # for the rendered file's reader: what the estate changed, and why

    @property
    def file(self) -> str:
        return self.compose.file


def apply_estate(
    spec: EstateSpec, name: str, stack: StackSpec, compose: ComposeFile, problems: Problems
) -> ImportedStack:
    """The compose model plus the stack config: routing, NFS volumes, secret keys, shared overlays, the engines'
    log driver. Deployable only when `problems` gained no error."""
    mine = Problems()  # this stack's own lines, added to `problems` at the end
    ctx = _Context(spec, name, stack, compose, mine.in_file(compose.file), mine.in_config("stacks", name), [])
    networks = _networks(ctx)
    services = _route(ctx, networks)
    services = _log_drivers(ctx, services)
    volumes = _volumes(ctx)
    secrets = _secrets(ctx, services)
    _check_names(ctx)
    problems.errors.extend(mine.errors)
    return ImportedStack(
        name=name,
        file=compose.file,
        services=services,
        networks=networks,
        volumes=volumes,
        configs=dict(compose.configs),
        secrets=secrets,
        warnings=(*compose.warnings, *mine.warnings),
        notes=tuple(ctx.notes),
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
    """The seed's rule for a routed service: on haproxy-public, endpoint_mode dnsrr, its routed ports served by the
    L7. Its other ports stay published, in host mode (a dnsrr service cannot use the ingress mesh)."""
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
        if routing.routed:
            port = None
            if routing.dns_names:
                port = routing.http_port or _compose_port(service)
                if port is None:
                    ctx.in_config.at(*path, "http_port").error(
                        f"give the HTTP port: {ctx.file} publishes "
                        f"{'several ports' if service.ports else 'no port'} for {svc_name}",
                    )
            if service.endpoint_mode == "vip":
                ctx.in_file.at("services", svc_name).warn("endpoint_mode vip replaced by dnsrr for L7")
            if public_key is None:
                public_key = public
                networks[public] = NetworkSpec(key=public, external=True, name=public)
            nets = {**service.effective_networks()}
            nets.setdefault(public_key, ())
            ports = _routed_ports(ctx, svc_name, service, port, routing)
            changes.update(networks=nets, endpoint_mode="dnsrr", ports=ports, route_port=port)
        services[svc_name] = dataclasses.replace(service, **changes)  # type: ignore[arg-type]
    return services


def _routed_ports(
    ctx: _Context, svc_name: str, service: ServiceSpec, http_port: int | None, routing: Routing
) -> tuple[PortSpec, ...]:
    """A routed service's publications: the ports the L7 serves go, every other one stays, in host mode."""
    tcp = {t.port: t.published for t in routing.tcp}
    kept = []
    at = ctx.in_file.at("services", svc_name, "ports")
    config = config_path(("stacks", ctx.name, "services", svc_name))
    for p in service.ports:
        shown = f"{p.published}:{p.target}/{p.protocol}" if p.published else f"{p.target}/{p.protocol}"
        if http_port is not None and p.target == http_port and p.protocol == "tcp":
            ctx.notes.append(f"{svc_name}: {shown} is not published: the L7 serves it as "
                             f"{', '.join(routing.dns_names)}")  # fmt: skip
            continue
        if p.target in tcp and p.protocol == "tcp":
            ctx.notes.append(f"{svc_name}: {shown} is not published: the L7 serves it as TCP on port {tcp[p.target]}")
            continue
        kept.append(dataclasses.replace(p, mode="host"))
        if p.mode != "host":
            at.warn(f"{shown} stays published, in host mode: a service behind the L7 is dnsrr, which cannot use "
                    "the ingress mesh, so it is reachable only on the nodes running a task of it; to reach it on "
                    f"every L7 node (and the L4 address) instead, route it as TCP: {config}.tcp")  # fmt: skip
            ctx.notes.append(f"{svc_name}: {shown} is published in host mode (the file says ingress): reachable "
                             "on the nodes running a task")  # fmt: skip
    return tuple(kept)


def _log_drivers(ctx: _Context, services: dict[str, ServiceSpec]) -> dict[str, ServiceSpec]:
    """`logging:` without a driver runs on the engines' default driver, with the file's options, as the daemon
    would run it; options the driver would refuse at every task start are refused here."""
    default = ctx.spec.engine_log_driver
    out = {}
    for svc_name, service in services.items():
        logging = service.logging
        if logging is not None and logging.driver is None:
            logging = Logging(default, logging.options)
            ctx.notes.append(f"{svc_name}: logging names no driver: the engines' default, {default}, as Docker "
                             "would use")  # fmt: skip
        if logging is not None and logging.driver is not None:
            unknown = unknown_log_options(logging.driver, logging.options)
            if unknown:
                given = "" if service.logging and service.logging.driver else (
                    f" (no driver is named, so the engines' default: {config_path(('engine', 'log_driver'))})")
                ctx.in_file.at("services", svc_name, "logging.options").error(
                    f"{', '.join(unknown)}: the {logging.driver} log driver{given} has no such option, and every "
                    "task would fail to start; name the driver the options are for (e.g. driver: json-file)")
            out[svc_name] = dataclasses.replace(service, logging=logging)
        else:
            out[svc_name] = service
    return out


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
    mapping = config_path(("stacks", ctx.name, "secrets"))
    for secret, body in secrets.items():
        if body.file_content is None and body.config_key is None and not body.external:
            ctx.in_config.at("secrets").error(
                f"{ctx.file} secret {secret!r} has no content: map it to a secret config key here "
                "(pulumi config set --secret …)",
            )
    # Swarm configs and secrets cannot change: a new content is a new object with a new name, which the services
    # move to before the old one goes. A fixed name from the file cannot do that, so it is not kept.
    renamed = [("configs", k, c.name, f"{ctx.name}_{k}-<content hash>") for k, c in ctx.compose.configs.items()
               if c.name and not c.external]  # fmt: skip
    renamed += [("secrets", k, b.name, f"{ctx.name}_{k}-<suffix>") for k, b in secrets.items()
                if b.name and not b.external]  # fmt: skip
    for kind, key, name, ours in renamed:
        ctx.in_file.at(kind, key, "name").warn(
            f"{name!r} is not kept: swarm-estate names it {ours}, so that a new content is a new object the services "
            "move to before the old one goes (Swarm never changes one in place); services still find it at the "
            "same target path"
        )
    declared_by_kind = {"configs": ctx.compose.configs, "secrets": secrets}
    fix = {
        "configs": "give its content instead (file: or content:)",
        "secrets": f"map it to a secret config key, {mapping}.<name>: <key>, and `pulumi config set --secret <key>`",
    }
    for svc_name, service in services.items():
        for kind, refs in (("configs", service.configs), ("secrets", service.secrets)):
            declared = declared_by_kind[kind]
            for ref in refs:
                if ref.source in declared and declared[ref.source].external:
                    ctx.in_file.at("services", svc_name, kind).error(
                        f"{ref.source!r} is external, but a service needs its Swarm id, which only Pulumi-managed "
                        f"objects have: {fix[kind].replace('<name>', ref.source)}"
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
    """Every service the L7 serves: by name (HTTP), on TCP ports, or both."""
    out = []
    for stack in stacks.values():
        for service in stack.services.values():
            routing = service.routing
            if routing is None or not routing.routed or (routing.dns_names and service.route_port is None):
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


def publications_of(stacks: dict[str, ImportedStack]) -> list[Publication]:
    """The ports the stacks' services publish themselves (a published port Docker picks is nobody's clash)."""
    return [
        Publication(stack.name, svc_name, p.published, p.protocol, p.mode, f"{stack.file}: service {svc_name}: ports")
        for stack in stacks.values()
        for svc_name, service in stack.services.items()
        for p in service.ports
        if p.published is not None
    ]
