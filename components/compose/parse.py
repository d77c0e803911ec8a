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

import yaml

from . import service as svc
from . import values as val
from .interpolate import interpolate
from .spec import ComposeFile, ConfigSpec, NetworkSpec, SecretSpec, ServiceSpec, VolumeSpec

TOP_LEVEL = {"version", "services", "networks", "volumes", "configs", "secrets"}


class Reporter:
    """Collects problems and warnings for one file, each naming where it was found."""

    def __init__(self, file: str):
        self.file = file
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def error(self, where: str, message: str) -> None:
        self.problems.append(f"{self.file}: {where}: {message}")

    def warn(self, message: str) -> None:
        self.warnings.append(f"{self.file}: {message}")


def load_yaml(text: str, rep: Reporter) -> dict[str, Any] | None:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        rep.error("yaml", f"not valid YAML: {exc}")
        return None
    if not isinstance(doc, dict):
        rep.error("top level", "a compose file is a mapping with a `services` key")
        return None
    return doc


def _where(path: tuple[str, ...]) -> str:
    if len(path) >= 3 and path[0] == "services":
        return f"service {path[1]}: {'.'.join(path[2:])}"
    return ".".join(path)


def parse_compose(text: str, file: str, base_dir: Path, variables: dict[str, str]) -> tuple[ComposeFile, list[str]]:
    """Parse one compose file. Returns the model and the problems (empty when the file is usable)."""
    rep = Reporter(file)
    doc = load_yaml(text, rep)
    if doc is None:
        return ComposeFile(file=file), rep.problems
    interp_problems: list[str] = []
    doc = interpolate(doc, variables, (), interp_problems)
    for problem in interp_problems:
        path, _, message = problem.partition(": ")
        rep.error(_where(tuple(path.split("."))), message)
    for key in doc:
        if key not in TOP_LEVEL and not str(key).startswith("x-"):
            rep.error(str(key), "not a compose v3 top-level key (services, networks, volumes, configs, secrets)")
    services: dict[str, ServiceSpec] = {}
    raw_services = doc.get("services")
    if not isinstance(raw_services, dict) or not raw_services:
        rep.error("services", "the file declares no services")
        raw_services = {}
    ignored: set[str] = set()
    deprecated: set[str] = set()
    for name, raw in raw_services.items():
        if not isinstance(raw, dict):
            rep.error(f"service {name}", "must be a mapping")
            continue
        parsed = svc.parse_service(str(name), raw, base_dir, variables, rep, ignored, deprecated)
        if parsed is not None:
            services[str(name)] = parsed
    if ignored:
        rep.warn(f"Ignoring unsupported options: {', '.join(sorted(ignored))}")
    if deprecated:
        lines = "\n".join(f"{k}: {svc.DEPRECATED[k]}" for k in sorted(deprecated))
        rep.warn(f"Ignoring deprecated options:\n\n{lines}")
    model = ComposeFile(
        file=file,
        services=services,
        networks=_section(doc, "networks", rep, _network),
        volumes=_section(doc, "volumes", rep, _volume),
        configs=_section(doc, "configs", rep, lambda k, r, e: _config(k, r, e, base_dir)),
        secrets=_section(doc, "secrets", rep, lambda k, r, e: _secret(k, r, e, base_dir)),
        warnings=tuple(rep.warnings),
    )
    _check_references(model, rep)
    return model, rep.problems


def _section(doc: dict[str, Any], section: str, rep: Reporter, parse: Callable[..., Any]) -> dict[str, Any]:
    raw = doc.get(section) or {}
    if not isinstance(raw, dict):
        rep.error(section, "must be a mapping")
        return {}
    out = {}
    for key, body in raw.items():
        body = body or {}
        if not isinstance(body, dict):
            rep.error(f"{section}.{key}", "must be a mapping")
            continue

        def err(sub: str, message: str, key: str = str(key)) -> None:
            rep.error(f"{section}.{key}" + (f".{sub}" if sub else ""), message)

        parsed = parse(str(key), body, err)
        if parsed is not None:
            out[str(key)] = parsed
    return out


def _unknown(body: dict[str, Any], allowed: set[str], err: Callable[[str, str], None]) -> None:
    for key in body:
        if key not in allowed and not str(key).startswith("x-"):
            err(
                str(key), "not supported by swarm-estate for a stack (remove it, or extend components/compose_parse.py)"
            )


def _external(body: dict[str, Any], err: Callable[[str, str], None]) -> bool:
    ext = body.get("external", False)
    if isinstance(ext, dict):  # v3.0-3.3 spelling: external: {name: …}
        return True
    return val.to_bool(ext, lambda m: err("external", m))


def _network(key: str, body: dict[str, Any], err: Callable[[str, str], None]) -> NetworkSpec | None:
    _unknown(body, {"external", "name", "driver", "driver_opts", "attachable", "internal", "labels", "ipam"}, err)
    external = _external(body, err)
    name = body.get("name") or (body["external"].get("name") if isinstance(body.get("external"), dict) else None)
    name = name or (key if external else None)  # as Docker normalises an external object
    driver = body.get("driver")
    if driver not in (None, "overlay") and not external:
        err("driver", f"a stack network must be an overlay (got {driver!r}): Swarm services attach to overlays only")
    subnets: list[str] = []
    ipam = body.get("ipam") or {}
    if ipam:
        _unknown(ipam, {"driver", "config"}, lambda k, m: err(f"ipam.{k}", m))
        for i, cfg in enumerate(ipam.get("config") or []):
            if not isinstance(cfg, dict) or set(cfg) - {"subnet"}:
                err(f"ipam.config[{i}]", "only `subnet` is supported for a stack network")
            elif cfg.get("subnet"):
                subnets.append(str(cfg["subnet"]))
    return NetworkSpec(
        key=key,
        external=external,
        name=str(name) if name else None,
        driver=driver,
        driver_opts=val.str_map(body.get("driver_opts"), lambda m: err("driver_opts", m)),
        attachable=val.to_bool(body.get("attachable", False), lambda m: err("attachable", m)),
        internal=val.to_bool(body.get("internal", False), lambda m: err("internal", m)),
        labels=val.label_map(body.get("labels"), lambda m: err("labels", m)),
        subnets=tuple(subnets),
    )


def _volume(key: str, body: dict[str, Any], err: Callable[[str, str], None]) -> VolumeSpec | None:
    _unknown(body, {"external", "name", "driver", "driver_opts", "labels"}, err)
    external = _external(body, err)
    name = body.get("name") or (body["external"].get("name") if isinstance(body.get("external"), dict) else None)
    name = name or (key if external else None)  # as Docker normalises an external object
    return VolumeSpec(
        key=key,
        external=external,
        name=str(name) if name else None,
        driver=body.get("driver"),
        driver_opts=val.str_map(body.get("driver_opts"), lambda m: err("driver_opts", m)),
        labels=val.label_map(body.get("labels"), lambda m: err("labels", m)),
    )


def _read(base_dir: Path, file: Any, err: Callable[[str, str], None]) -> str | None:
    path = (base_dir / str(file)).resolve()
    try:
        return path.read_text()
    except OSError as exc:
        err("file", f"cannot read {file} ({exc.strerror or exc}); paths are relative to the compose file")
        return None


def _config(key: str, body: dict[str, Any], err: Callable[[str, str], None], base_dir: Path) -> ConfigSpec | None:
    _unknown(body, {"file", "content", "external", "name", "labels"}, err)
    external = _external(body, err)
    sources = [k for k in ("file", "content") if k in body] + (["external"] if external else [])
    if len(sources) != 1:
        err("", "give exactly one of file, content or external: true")
        return None
    content = _read(base_dir, body["file"], err) if "file" in body else body.get("content")
    return ConfigSpec(
        key=key,
        content=None if content is None else str(content),
        external=external,
        name=str(body["name"]) if body.get("name") else None,
        labels=val.label_map(body.get("labels"), lambda m: err("labels", m)),
    )


def _secret(key: str, body: dict[str, Any], err: Callable[[str, str], None], base_dir: Path) -> SecretSpec | None:
    _unknown(body, {"file", "external", "name", "labels"}, err)
    external = _external(body, err)
    return SecretSpec(
        key=key,
        file_content=_read(base_dir, body["file"], err) if "file" in body else None,
        external=external,
        name=str(body["name"]) if body.get("name") else None,
        labels=val.label_map(body.get("labels"), lambda m: err("labels", m)),
    )


def _check_references(model: ComposeFile, rep: Reporter) -> None:
    for name, service in model.services.items():
        for net in service.networks:
            if net not in model.networks and net != "default":
                rep.error(f"service {name}: networks.{net}", "is not declared under the top-level `networks`")
        for mount in service.mounts:
            if mount.type == "volume" and mount.source and mount.source not in model.volumes:
                rep.error(f"service {name}: volumes", f"named volume {mount.source!r} is not declared under `volumes`")
        for kind, refs, declared in (
            ("configs", service.configs, model.configs),
            ("secrets", service.secrets, model.secrets),
        ):
            for ref in refs:
                if ref.source not in declared:
                    rep.error(f"service {name}: {kind}", f"{ref.source!r} is not declared under the top-level `{kind}`")
