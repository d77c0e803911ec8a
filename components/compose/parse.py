"""Compose v3 file -> ComposeFile: the swarm-relevant subset, normalised the way `docker stack config` does.

Every key is accounted for. Keys Swarm ignores get the warning `docker stack deploy` prints;
keys Docker refuses for stacks are errors, as they are for Docker; keys Swarm supports but this
program cannot express through the docker provider are errors naming the file, service and key,
so nothing an author wrote is dropped without a word.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import strict_yaml
from . import service as svc
from . import values as val
from .interpolate import interpolate
from .problems import Problems
from .spec import ComposeFile, ConfigSpec, NetworkSpec, SecretSpec, ServiceSpec, VolumeSpec

TOP_LEVEL = {"version", "services", "networks", "volumes", "configs", "secrets"}


def load_yaml(text: str, file: str, problems: Problems) -> dict[str, Any] | None:
    try:
        doc = strict_yaml.load(text, file)
    except strict_yaml.YamlError as exc:
        problems.errors.append(str(exc))  # already `<file>:<line>:<column>: …`, as an editor jumps to it
        return None
    if not isinstance(doc, dict):
        problems.at("top level").error("a compose file is a mapping with a `services` key")
        return None
    return doc


def parse_compose(text: str, file: str, base_dir: Path, variables: dict[str, str]) -> tuple[ComposeFile, list[str]]:
    """Parse one compose file. Returns the model and the problems (empty when the file is usable)."""
    problems = Problems().in_file(file)
    doc = load_yaml(text, file, problems)
    if doc is None:
        return ComposeFile(file=file), problems.errors
    doc = interpolate(doc, variables, problems)
    for key in doc:
        if key not in TOP_LEVEL and not str(key).startswith("x-"):
            problems.at(str(key)).error(
                "not a compose v3 top-level key (services, networks, volumes, configs, secrets)"
            )
    services: dict[str, ServiceSpec] = {}
    raw_services = doc.get("services")
    if not isinstance(raw_services, dict) or not raw_services:
        problems.at("services").error("the file declares no services")
        raw_services = {}
    ignored: set[str] = set()
    deprecated: set[str] = set()
    for name, raw in raw_services.items():
        at = problems.at("services", str(name))
        if not isinstance(raw, dict):
            at.error("must be a mapping")
            continue
        parsed = svc.parse_service(str(name), raw, base_dir, variables, at, ignored, deprecated)
        if parsed is not None:
            services[str(name)] = parsed
    if ignored:
        problems.warn(f"Ignoring unsupported options: {', '.join(sorted(ignored))}")
    if deprecated:
        lines = "\n".join(f"{k}: {svc.DEPRECATED[k]}" for k in sorted(deprecated))
        problems.warn(f"Ignoring deprecated options:\n\n{lines}")
    model = ComposeFile(
        file=file,
        services=services,
        networks=_section(doc, "networks", problems, _network),
        volumes=_section(doc, "volumes", problems, _volume),
        configs=_section(doc, "configs", problems, lambda k, r, p: _config(k, r, p, base_dir)),
        secrets=_section(doc, "secrets", problems, lambda k, r, p: _secret(k, r, p, base_dir)),
        warnings=tuple(problems.warnings),
    )
    _check_references(model, problems)
    return model, problems.errors


def _section(doc: dict[str, Any], section: str, problems: Problems, parse: Callable[..., Any]) -> dict[str, Any]:
    raw = doc.get(section) or {}
    if not isinstance(raw, dict):
        problems.at(section).error("must be a mapping")
        return {}
    out = {}
    for key, body in raw.items():
        body = body or {}
        at = problems.at(section, str(key))
        if not isinstance(body, dict):
            at.error("must be a mapping")
            continue
        parsed = parse(str(key), body, at)
        if parsed is not None:
            out[str(key)] = parsed
    return out


def _unknown(body: dict[str, Any], allowed: set[str], problems: Problems) -> None:
    for key in body:
        if key not in allowed and not str(key).startswith("x-"):
            problems.at(str(key)).error(
                "not supported by swarm-estate for a stack (remove it, or extend components/compose/parse.py)"
            )


def _external(body: dict[str, Any], problems: Problems) -> bool:
    ext = body.get("external", False)
    if isinstance(ext, dict):  # v3.0-3.3 spelling: external: {name: …}
        return True
    return val.to_bool(ext, problems.at("external"))


def _network(key: str, body: dict[str, Any], problems: Problems) -> NetworkSpec | None:
    _unknown(body, {"external", "name", "driver", "driver_opts", "attachable", "internal", "labels", "ipam"}, problems)
    external = _external(body, problems)
    name = body.get("name") or (body["external"].get("name") if isinstance(body.get("external"), dict) else None)
    name = name or (key if external else None)  # as Docker normalises an external object
    driver = body.get("driver")
    if driver not in (None, "overlay") and not external:
        problems.at("driver").error(
            f"a stack network must be an overlay (got {driver!r}): Swarm services attach to overlays only"
        )
    subnets: list[str] = []
    ipam = body.get("ipam") or {}
    if ipam:
        _unknown(ipam, {"driver", "config"}, problems.at("ipam"))
        for i, cfg in enumerate(ipam.get("config") or []):
            if not isinstance(cfg, dict) or set(cfg) - {"subnet"}:
                problems.at(f"ipam.config[{i}]").error("only `subnet` is supported for a stack network")
            elif cfg.get("subnet"):
                subnets.append(str(cfg["subnet"]))
    return NetworkSpec(
        key=key,
        external=external,
        name=str(name) if name else None,
        driver=driver,
        driver_opts=val.str_map(body.get("driver_opts"), problems.at("driver_opts")),
        attachable=val.to_bool(body.get("attachable", False), problems.at("attachable")),
        internal=val.to_bool(body.get("internal", False), problems.at("internal")),
        labels=val.label_map(body.get("labels"), problems.at("labels")),
        subnets=tuple(subnets),
    )


def _volume(key: str, body: dict[str, Any], problems: Problems) -> VolumeSpec | None:
    _unknown(body, {"external", "name", "driver", "driver_opts", "labels"}, problems)
    external = _external(body, problems)
    name = body.get("name") or (body["external"].get("name") if isinstance(body.get("external"), dict) else None)
    name = name or (key if external else None)  # as Docker normalises an external object
    return VolumeSpec(
        key=key,
        external=external,
        name=str(name) if name else None,
        driver=body.get("driver"),
        driver_opts=val.str_map(body.get("driver_opts"), problems.at("driver_opts")),
        labels=val.label_map(body.get("labels"), problems.at("labels")),
    )


def _read(base_dir: Path, file: Any, problems: Problems) -> str | None:
    path = (base_dir / str(file)).resolve()
    try:
        return path.read_text()
    except OSError as exc:
        problems.at("file").error(f"cannot read {file} ({exc.strerror or exc}); paths are relative to the compose file")
        return None


def _config(key: str, body: dict[str, Any], problems: Problems, base_dir: Path) -> ConfigSpec | None:
    _unknown(body, {"file", "content", "external", "name", "labels"}, problems)
    external = _external(body, problems)
    sources = [k for k in ("file", "content") if k in body] + (["external"] if external else [])
    if len(sources) != 1:
        problems.error("give exactly one of file, content or external: true")
        return None
    content = _read(base_dir, body["file"], problems) if "file" in body else body.get("content")
    return ConfigSpec(
        key=key,
        content=None if content is None else str(content),
        external=external,
        name=str(body["name"]) if body.get("name") else None,
        labels=val.label_map(body.get("labels"), problems.at("labels")),
    )


def _secret(key: str, body: dict[str, Any], problems: Problems, base_dir: Path) -> SecretSpec | None:
    _unknown(body, {"file", "external", "name", "labels"}, problems)
    external = _external(body, problems)
    return SecretSpec(
        key=key,
        file_content=_read(base_dir, body["file"], problems) if "file" in body else None,
        external=external,
        name=str(body["name"]) if body.get("name") else None,
        labels=val.label_map(body.get("labels"), problems.at("labels")),
    )


def _check_references(model: ComposeFile, problems: Problems) -> None:
    for name, service in model.services.items():
        at = problems.at("services", name)
        for net in service.networks:
            if net not in model.networks and net != "default":
                at.at("networks", net).error("is not declared under the top-level `networks`")
        for mount in service.mounts:
            if mount.type == "volume" and mount.source and mount.source not in model.volumes:
                at.at("volumes").error(f"named volume {mount.source!r} is not declared under `volumes`")
        for kind, refs, declared in (
            ("configs", service.configs, model.configs),
            ("secrets", service.secrets, model.secrets),
        ):
            for ref in refs:
                if ref.source not in declared:
                    at.at(kind).error(f"{ref.source!r} is not declared under the top-level `{kind}`")
