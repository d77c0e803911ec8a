"""One compose service -> ServiceSpec, with the key policy of `docker stack deploy`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..units import parse_bytes
from .problems import Problems
from .spec import FileRef, Healthcheck, Logging, MountSpec, PortSpec, ServiceSpec
from .values import (
    durations,
    label_map,
    opt_str,
    resources,
    restart_policy,
    scalar,
    split_command,
    str_map,
    to_bool,
    to_int,
    update_config,
)

# `docker stack deploy` prints "Ignoring unsupported options: …" for these and goes on. depends_on
# is listed too: Swarm starts every service at once, and authors should hear that it is ignored.
SWARM_IGNORED = {
    "build", "cgroupns_mode", "cgroup_parent", "depends_on", "devices", "domainname", "external_links",
    "ipc", "links", "mac_address", "network_mode", "pid", "privileged", "restart", "security_opt",
    "shm_size", "userns_mode",
}  # fmt: skip
DEPRECATED = {
    "container_name": "Setting the container name is not supported.",
    "expose": "Exposing ports is unnecessary - services on the same network can access each other's containers "
    "on any port.",
}
# Docker itself refuses these in a stack ("Configuration contains forbidden properties").
FORBIDDEN = {
    "extends": "Support for `extends` is not implemented yet.",
    "volume_driver": "define the volume under the top-level `volumes` with its driver instead",
    "volumes_from": "share a volume by declaring it under the top-level `volumes` and naming it in each service",
    "cpu_quota": "set resource limits with deploy.resources",
    "cpu_shares": "set resource limits with deploy.resources",
    "cpuset": "set resource limits with deploy.resources",
    "mem_limit": "set resource limits with deploy.resources",
    "memswap_limit": "set resource limits with deploy.resources",
}
# Swarm runs these, but the docker provider's Service has no field for them: refusing is the
# only honest answer, since deploying without them would change what the service does.
NOT_EXPRESSIBLE = {"ulimits", "tty", "stdin_open", "credential_spec", "isolation", "oom_score_adj", "group_add"}
SUPPORTED = {
    "image", "command", "entrypoint", "environment", "env_file", "networks", "deploy", "configs", "secrets",
    "volumes", "logging", "healthcheck", "hostname", "user", "working_dir", "stop_grace_period", "stop_signal",
    "ports", "labels", "extra_hosts", "cap_add", "cap_drop", "sysctls", "init", "read_only", "tmpfs", "dns",
    "dns_search", "dns_opt",
}  # fmt: skip
DEPLOY_KEYS = {
    "mode", "replicas", "endpoint_mode", "labels", "placement", "restart_policy", "update_config",
    "rollback_config", "resources",
}  # fmt: skip


# --- the service -------------------------------------------------------------------------------


def parse_service(
    name: str,
    raw: dict[str, Any],
    base_dir: Path,
    variables: dict[str, str],
    problems: Problems,
    ignored: set[str],
    deprecated: set[str],
) -> ServiceSpec | None:
    for key in raw:
        if key in SUPPORTED or str(key).startswith("x-"):
            continue
        if key in SWARM_IGNORED:
            ignored.add(key)
        elif key in DEPRECATED:
            deprecated.add(key)
        elif key in FORBIDDEN:
            problems.at(key).error(f"Docker refuses it in a stack: {FORBIDDEN[key]}")
        elif key in NOT_EXPRESSIBLE:
            problems.at(key).error(
                "Swarm supports it, but the docker provider's Service has no field for it, so swarm-estate "
                "cannot deploy it; remove it (or run that service outside the stack)"
            )
        else:
            problems.at(key).error("not a compose key swarm-estate knows (a typo?)")
    image = raw.get("image")
    if not image:
        problems.at("image").error("a Swarm service needs an image (build is ignored by Swarm)")
    deploy = raw.get("deploy") or {}
    if not isinstance(deploy, dict):
        problems.at("deploy").error("must be a mapping")
        deploy = {}
    for key in deploy:
        if key not in DEPLOY_KEYS:
            problems.at(f"deploy.{key}").error(
                "not supported by swarm-estate (remove it, or extend components/compose/service.py)"
            )
    mode = str(deploy.get("mode", "replicated"))
    if mode not in ("replicated", "global"):
        problems.at("deploy.mode").error(f"{mode!r}: swarm-estate deploys replicated or global services (not jobs)")
    replicas = (
        to_int(deploy["replicas"], problems.at("deploy.replicas")) if deploy.get("replicas") is not None else None
    )
    if mode == "global" and replicas is not None:
        problems.at("deploy.replicas").error(
            "a global service runs one task per node; remove replicas or use mode replicated"
        )
    endpoint_mode = deploy.get("endpoint_mode")
    if endpoint_mode not in (None, "vip", "dnsrr"):
        problems.at("deploy.endpoint_mode").error(f"{endpoint_mode!r} is not vip or dnsrr")
    placement = deploy.get("placement") or {}
    for key in placement:
        if key not in ("constraints", "preferences", "max_replicas_per_node"):
            problems.at(f"deploy.placement.{key}").error("not supported by swarm-estate")
    preferences = []
    for pref in placement.get("preferences") or []:
        if isinstance(pref, dict) and set(pref) == {"spread"}:
            preferences.append(f"spread={pref['spread']}")
        else:
            problems.at("deploy.placement.preferences").error(f"{pref!r}: only {{spread: <label>}} preferences exist")
    max_per_node = placement.get("max_replicas_per_node")
    if (raw.get("dns_search") or raw.get("dns_opt")) and not raw.get("dns"):
        problems.at("dns").error("dns_search and dns_opt need `dns` too: the docker provider sets them together")
    return ServiceSpec(
        name=name,
        image=str(image or ""),
        command=split_command(raw.get("command"), problems.at("command")),
        entrypoint=split_command(raw.get("entrypoint"), problems.at("entrypoint")),
        environment=_environment(raw, base_dir, variables, problems),
        networks=_networks(raw.get("networks"), problems.at("networks")),
        ports=_ports(raw.get("ports") or [], problems.at("ports")),
        mounts=_mounts(raw.get("volumes") or [], raw.get("tmpfs"), problems),
        configs=_file_refs(raw.get("configs") or [], "configs", problems.at("configs")),
        secrets=_file_refs(raw.get("secrets") or [], "secrets", problems.at("secrets")),
        mode=mode,
        replicas=replicas,
        endpoint_mode=endpoint_mode,
        constraints=tuple(str(c) for c in placement.get("constraints") or []),
        preferences=tuple(preferences),
        max_replicas_per_node=None if max_per_node is None else to_int(max_per_node, problems.at("deploy.placement")),
        restart_policy=restart_policy(deploy.get("restart_policy"), problems.at("deploy.restart_policy")),
        update_config=update_config(deploy.get("update_config"), problems.at("deploy.update_config")),
        rollback_config=update_config(deploy.get("rollback_config"), problems.at("deploy.rollback_config")),
        resources=resources(deploy.get("resources"), problems.at("deploy.resources")),
        deploy_labels=label_map(deploy.get("labels"), problems.at("deploy.labels")),
        labels=label_map(raw.get("labels"), problems.at("labels")),
        logging=_logging(raw.get("logging"), problems),
        healthcheck=_healthcheck(raw.get("healthcheck"), problems),
        hostname=opt_str(raw.get("hostname")),
        user=opt_str(raw.get("user")),
        working_dir=opt_str(raw.get("working_dir")),
        stop_grace_period=durations(raw, ("stop_grace_period",), problems)["stop_grace_period"],
        stop_signal=opt_str(raw.get("stop_signal")),
        extra_hosts=_extra_hosts(raw.get("extra_hosts"), problems.at("extra_hosts")),
        cap_add=tuple(str(c) for c in raw.get("cap_add") or []),
        cap_drop=tuple(str(c) for c in raw.get("cap_drop") or []),
        sysctls=label_map(raw.get("sysctls"), problems.at("sysctls")),
        init=None if raw.get("init") is None else to_bool(raw["init"], problems.at("init")),
        read_only=None if raw.get("read_only") is None else to_bool(raw["read_only"], problems.at("read_only")),
        dns=_str_list(raw.get("dns")),
        dns_search=_str_list(raw.get("dns_search")),
        dns_opt=_str_list(raw.get("dns_opt")),
    )


def _str_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (str(value),) if not isinstance(value, list) else tuple(str(v) for v in value)


def _environment(raw: dict[str, Any], base_dir: Path, variables: dict[str, str], problems: Problems):
    """env_file entries first (later files win), then `environment`; a bare key takes its value from
    the stack's variables, as Docker takes it from the shell, and is left unset without one."""
    env: dict[str, str | None] = {}
    files = raw.get("env_file") or []
    for file in [files] if isinstance(files, str) else files:
        path = base_dir / str(file)
        try:
            lines = [line.removesuffix("\r") for line in path.read_text().split("\n")]
        except OSError as exc:
            problems.at("env_file").error(
                f"cannot read {file} ({exc.strerror or exc}); paths are relative to the compose file"
            )
            continue
        for number, text in enumerate(lines, 1):
            parsed = env_file_line(text, number == 1)
            if isinstance(parsed, str):
                problems.at("env_file").error(f"{file}:{number}: {parsed}")
            elif parsed is not None:
                env[parsed[0]] = parsed[1]
    value = raw.get("environment")
    if isinstance(value, list):
        for item in value:
            key, sep, val = str(item).partition("=")
            env[key] = val if sep else None
    elif isinstance(value, dict):
        env.update({str(k): None if v is None else scalar(v) for k, v in value.items()})
    elif value is not None:
        problems.at("environment").error("must be a list of KEY=value or a mapping")
    resolved = {k: v if v is not None else variables.get(k) for k, v in env.items()}
    return {k: v for k, v in sorted(resolved.items()) if v is not None}


def env_file_line(text: str, first: bool) -> tuple[str, str | None] | str | None:
    """One env_file line as Docker reads it (docker/cli opts.ParseEnvFile): leading whitespace dropped, blank and
    `#` lines skipped, `KEY=value` kept verbatim (no quote removal, no trailing trim, `#` later is part of the
    value), a bare `KEY` taken from the environment (here: the stack's variables). None for a skipped line, a
    message for a line Docker refuses."""
    line = (text.removeprefix("\ufeff") if first else text).lstrip()
    if not line or line.startswith("#"):
        return None
    key, sep, value = line.partition("=")
    if not key:
        return f"no variable name on line {line!r}"
    if " " in key or "\t" in key:
        return f"variable {key!r} contains whitespaces"
    return key, value if sep else None


def _networks(value: Any, problems: Problems) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if isinstance(value, list):
        return {str(n): () for n in value}
    if not isinstance(value, dict):
        problems.error("must be a list or a mapping")
        return {}
    out = {}
    for net, body in value.items():
        body = body or {}
        extra = set(body) - {"aliases"}
        if extra:
            problems.error(f"{net}: {', '.join(sorted(extra))} not supported by swarm-estate (only aliases)")
        out[str(net)] = tuple(str(a) for a in body.get("aliases") or [])
    return out


def _ports(value: list[Any], problems: Problems) -> tuple[PortSpec, ...]:
    out: list[PortSpec] = []
    for item in value:
        if isinstance(item, dict):
            extra = set(item) - {"target", "published", "protocol", "mode"}
            if extra:
                problems.error(f"{item!r}: unknown keys {', '.join(sorted(extra))}")
            target = to_int(item.get("target"), problems)
            published = to_int(item["published"], problems) if item.get("published") is not None else None
            if target is not None:
                out.append(
                    PortSpec(target, published, str(item.get("protocol", "tcp")), str(item.get("mode", "ingress")))
                )
            continue
        out += _short_port(str(item), problems)
    return tuple(out)


def _range(text: str) -> list[int]:
    low, _, high = text.partition("-")
    return list(range(int(low), int(high or low) + 1))


def _short_port(text: str, problems: Problems) -> list[PortSpec]:
    spec, _, protocol = text.partition("/")
    parts = spec.rsplit(":", 2)
    try:
        targets = _range(parts[-1])
        published = _range(parts[-2]) if len(parts) >= 2 and parts[-2] else []
    except ValueError:
        problems.error(f"{text!r} is not a port mapping ([published:]target[/protocol])")
        return []
    if published and len(published) != len(targets):
        problems.error(f"{text!r}: the published and target ranges differ in length")
        return []
    protocol = protocol or "tcp"
    return [PortSpec(t, published[i] if published else None, protocol) for i, t in enumerate(targets)]


def _mounts(value: list[Any], tmpfs: Any, problems: Problems) -> tuple[MountSpec, ...]:
    out: list[MountSpec] = []
    for item in value:
        if isinstance(item, dict):
            out.append(_long_mount(item, problems))
            continue
        parts = str(item).split(":")
        if len(parts) == 1:
            out.append(MountSpec("volume", parts[0]))
            continue
        source, target, mode = parts[0], parts[1], parts[2] if len(parts) > 2 else ""
        flags = set(mode.split(",")) - {""}
        kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
        propagation = next((f for f in flags if f in _PROPAGATIONS), None)
        out.append(MountSpec(kind, target, source, "ro" in flags, "nocopy" in flags, propagation))
    for target in _str_list(tmpfs):
        out.append(MountSpec("tmpfs", target))
    for mount in out:
        if mount.type == "bind" and not (mount.source or "").startswith("/"):
            problems.at("volumes").error(
                f"bind source {mount.source!r} must be absolute: a task runs on any node, and a path "
                "relative to this checkout means nothing there"
            )
    return tuple(out)


_PROPAGATIONS = {"shared", "rshared", "slave", "rslave", "private", "rprivate"}


def _long_mount(item: dict[str, Any], problems: Problems) -> MountSpec:
    extra = set(item) - {"type", "source", "target", "read_only", "bind", "volume", "tmpfs"}
    if extra:
        problems.at("volumes").error(f"{', '.join(sorted(extra))} not supported by swarm-estate")
    kind = str(item.get("type", "volume"))
    if kind not in ("volume", "bind", "tmpfs"):
        problems.at("volumes").error(f"mount type {kind!r} is not supported (volume, bind or tmpfs)")
    bind, volume, tmpfs = item.get("bind") or {}, item.get("volume") or {}, item.get("tmpfs") or {}
    for sub, allowed in ((bind, {"propagation"}), (volume, {"nocopy"}), (tmpfs, {"size", "mode"})):
        if set(sub) - allowed:
            problems.at("volumes").error(f"{', '.join(sorted(set(sub) - allowed))} not supported by swarm-estate")
    size = tmpfs.get("size")
    return MountSpec(
        type=kind,
        target=str(item.get("target", "")),
        source=opt_str(item.get("source")),
        read_only=to_bool(item.get("read_only", False), problems.at("volumes")),
        no_copy=to_bool(volume.get("nocopy", False), problems.at("volumes")),
        propagation=opt_str(bind.get("propagation")),
        tmpfs_size=None if size is None else parse_bytes(size),
        tmpfs_mode=to_int(tmpfs["mode"], problems.at("volumes")) if "mode" in tmpfs else None,
    )


def _file_refs(value: list[Any], kind: str, problems: Problems) -> tuple[FileRef, ...]:
    out = []
    for item in value:
        body = item if isinstance(item, dict) else {"source": item}
        extra = set(body) - {"source", "target", "uid", "gid", "mode"}
        if extra:
            problems.error(f"{', '.join(sorted(extra))} not supported")
        source = str(body.get("source", ""))
        # Docker's defaults: a config lands at /<name>, a secret at /run/secrets/<name>.
        target = str(body.get("target") or (f"/{source}" if kind == "configs" else source))
        mode = to_int(body["mode"], problems) if body.get("mode") is not None else 0o444
        out.append(FileRef(source, target, str(body.get("uid", "0")), str(body.get("gid", "0")), mode or 0))
    return tuple(out)


def _logging(body: Any, problems: Problems) -> Logging | None:
    if not body:
        return None
    for key in set(body) - {"driver", "options"}:
        problems.at(f"logging.{key}").error("not a logging key")
    # No driver: Docker runs the service with the daemon's default driver and these options.
    driver = opt_str(body.get("driver")) or None
    return Logging(driver, str_map(body.get("options"), problems.at("logging.options")))


def _healthcheck(body: Any, problems: Problems) -> Healthcheck | None:
    if not body:
        return None
    for key in set(body) - {"test", "interval", "timeout", "retries", "start_period", "disable"}:
        problems.at(f"healthcheck.{key}").error("not supported by the docker provider's Service")
    if to_bool(body.get("disable", False), problems.at("healthcheck.disable")):
        return Healthcheck(test=("NONE",))
    test = body.get("test")
    tests = ("CMD-SHELL", test) if isinstance(test, str) else tuple(str(t) for t in test or [])
    times = durations(body, ("interval", "timeout", "start_period"), problems.at("healthcheck"))
    retries = body.get("retries")
    return Healthcheck(
        test=tests,
        interval=times["interval"],
        timeout=times["timeout"],
        retries=None if retries is None else to_int(retries, problems.at("healthcheck.retries")),
        start_period=times["start_period"],
    )


def _extra_hosts(value: Any, problems: Problems) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if isinstance(value, dict):
        return tuple((str(k), str(v)) for k, v in value.items())
    out = []
    for item in value:
        text = str(item)
        index = min((i for i in (text.find(":"), text.find("=")) if i > 0), default=-1)
        if index < 0:
            problems.error(f"{text!r} is not host:address")
            continue
        out.append((text[:index], text[index + 1 :]))
    return tuple(out)
