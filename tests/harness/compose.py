"""The reference for compose imports: `docker stack config -c`, and one canonical shape to compare with.

Both Docker's normalised output and the import's ComposeFile are projected onto the same plain
shape (durations in ns, sizes in bytes, CPUs in nano-CPUs, Docker's documented defaults filled).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from components.compose.spec import ComposeFile, ServiceSpec
from components.units import parse_duration


def _docker_cli() -> str:
    """A Docker CLI that has `docker stack config` (20.10's Debian build does not; /usr/local/bin's does)."""
    for candidate in ("/usr/local/bin/docker", shutil.which("docker")):
        if candidate and Path(candidate).exists():
            probe = subprocess.run([candidate, "stack", "config", "--help"], capture_output=True, text=True, timeout=30)
            if probe.returncode == 0 and "--compose-file" in probe.stdout:
                return candidate
    raise RuntimeError("no Docker CLI with `docker stack config` (the compose reference): install a recent docker CLI")


DOCKER = _docker_cli()


def docker_stack_config(file: Path, variables: dict[str, str]) -> tuple[int, Any, str]:
    """Run the real CLI with only the interpolation variables in its environment."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", **variables}
    proc = subprocess.run(
        [DOCKER, "stack", "config", "-c", file.name],
        cwd=file.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, yaml.safe_load(proc.stdout) if proc.returncode == 0 else None, proc.stderr


# --- the canonical shape -------------------------------------------------------------------------


def _ns(value: Any) -> int | None:
    return None if value is None else parse_duration(value)


def _update(body: dict[str, Any] | None) -> tuple | None:
    if not body:
        return None
    ratio = body.get("max_failure_ratio")
    return (
        body.get("parallelism"),
        _ns(body.get("delay")),
        body.get("failure_action"),
        _ns(body.get("monitor")),
        None if ratio is None else float(ratio),
        body.get("order"),
    )


def _mount_from_docker(m: dict[str, Any]) -> tuple:
    return (
        m["type"],
        m.get("source"),
        m["target"],
        bool(m.get("read_only")),
        bool((m.get("volume") or {}).get("nocopy")),
        (m.get("bind") or {}).get("propagation"),
        (m.get("tmpfs") or {}).get("size"),
    )


def _refs_from_docker(refs: list[dict[str, Any]], kind: str) -> list[tuple]:
    # Docker's documented defaults: a config lands at /<name>, a secret at /run/secrets/<name>, 0444, root.
    out = []
    for r in refs or []:
        default = f"/{r['source']}" if kind == "configs" else r["source"]
        out.append(
            (r["source"], r.get("target") or default, r.get("uid", "0"), r.get("gid", "0"), r.get("mode", 0o444))
        )
    return out


def canonical_docker(doc: dict[str, Any]) -> dict[str, Any]:
    services = {}
    for name, s in doc["services"].items():
        deploy = s.get("deploy") or {}
        placement = deploy.get("placement") or {}
        rp = deploy.get("restart_policy")
        res = deploy.get("resources") or {}
        hc = s.get("healthcheck")
        nets = s.get("networks") or {}
        nets = (
            {n: () for n in nets}
            if isinstance(nets, list)
            else {k: tuple((v or {}).get("aliases") or ()) for k, v in nets.items()}
        )
        mounts = [_mount_from_docker(m) for m in s.get("volumes") or []]
        mounts += [("tmpfs", None, t, False, False, None, None) for t in s.get("tmpfs") or []]
        services[name] = {
            "image": s.get("image"),
            "command": s.get("command"),
            "entrypoint": s.get("entrypoint"),
            "environment": {k: v for k, v in (s.get("environment") or {}).items() if v is not None},
            "networks": nets,
            "ports": [_port(p) for p in s.get("ports") or []],
            "mounts": mounts,
            "configs": _refs_from_docker(s.get("configs"), "configs"),
            "secrets": _refs_from_docker(s.get("secrets"), "secrets"),
            "mode": deploy.get("mode", "replicated"),
            "replicas": deploy.get("replicas"),
            "endpoint_mode": deploy.get("endpoint_mode"),
            "constraints": placement.get("constraints", []),
            "preferences": [f"spread={p['spread']}" for p in placement.get("preferences", [])],
            "max_replicas_per_node": placement.get("max_replicas_per_node"),
            "restart": _restart(rp),
            "update": _update(deploy.get("update_config")),
            "rollback": _update(deploy.get("rollback_config")),
            "limits": _resources(res.get("limits")),
            "reservations": _resources(res.get("reservations")),
            "deploy_labels": deploy.get("labels") or {},
            "labels": s.get("labels") or {},
            "logging": None if not s.get("logging") else (s["logging"]["driver"], s["logging"].get("options") or {}),
            "healthcheck": _health(hc),
            "hostname": s.get("hostname"),
            "user": s.get("user"),
            "working_dir": s.get("working_dir"),
            "stop_grace_period": _ns(s.get("stop_grace_period")),
            "stop_signal": s.get("stop_signal"),
            "extra_hosts": [tuple(h.split(":", 1)) for h in s.get("extra_hosts") or []],
            "cap_add": s.get("cap_add") or [],
            "cap_drop": s.get("cap_drop") or [],
            "sysctls": s.get("sysctls") or {},
            "init": s.get("init"),
            "read_only": s.get("read_only"),
            "dns": s.get("dns") or [],
            "dns_search": s.get("dns_search") or [],
        }  # fmt: skip
    return {
        "services": services,
        "networks": {
            k: (
                bool(v.get("external")),
                v.get("name"),
                v.get("driver"),
                v.get("driver_opts") or {},
                bool(v.get("attachable")),
                bool(v.get("internal")),
                v.get("labels") or {},
                [c["subnet"] for c in (v.get("ipam") or {}).get("config", [])],
            )
            for k, v in (doc.get("networks") or {}).items()
        },  # fmt: skip
        "volumes": {
            k: (
                bool(v.get("external")),
                v.get("name"),
                v.get("driver"),
                v.get("driver_opts") or {},
                v.get("labels") or {},
            )
            for k, v in (doc.get("volumes") or {}).items()
        },
        "configs": {k: Path(v["file"]).read_text() for k, v in (doc.get("configs") or {}).items()},
        "secrets": {k: Path(v["file"]).read_text() for k, v in (doc.get("secrets") or {}).items()},
    }


def _port(p: dict[str, Any]) -> tuple:
    return (p["target"], p.get("published"), p.get("protocol", "tcp"), p.get("mode", "ingress"))


def _restart(rp: dict[str, Any] | None) -> tuple | None:
    return (
        None if not rp else (rp.get("condition"), _ns(rp.get("delay")), rp.get("max_attempts"), _ns(rp.get("window")))
    )


def _health(hc: dict[str, Any] | None) -> tuple | None:
    if not hc:
        return None
    return (
        hc.get("test"),
        _ns(hc.get("interval")),
        _ns(hc.get("timeout")),
        hc.get("retries"),
        _ns(hc.get("start_period")),
    )


def _pair(values: tuple | None) -> tuple | None:
    return None if values is None or values == (None, None) else values


def _resources(body: dict[str, Any] | None) -> tuple | None:
    if not body:
        return None
    cpus = body.get("cpus")
    memory = body.get("memory")
    return (None if cpus is None else round(float(cpus) * 1e9), None if memory is None else int(memory))


def _canonical_service(s: ServiceSpec) -> dict[str, Any]:
    upd = [
        None if u is None else (u.parallelism, u.delay, u.failure_action, u.monitor, u.max_failure_ratio, u.order)
        for u in (s.update_config, s.rollback_config)
    ]
    res = s.resources
    hc = s.healthcheck
    rp = s.restart_policy
    return {
        "image": s.image,
        "command": None if s.command is None else list(s.command),
        "entrypoint": None if s.entrypoint is None else list(s.entrypoint),
        "environment": s.environment,
        "networks": s.networks,
        "ports": [(p.target, p.published, p.protocol, p.mode) for p in s.ports],
        "mounts": [(m.type, m.source, m.target, m.read_only, m.no_copy, m.propagation, m.tmpfs_size) for m in s.mounts],
        "configs": [(r.source, r.target, r.uid, r.gid, r.mode) for r in s.configs],
        "secrets": [(r.source, r.target, r.uid, r.gid, r.mode) for r in s.secrets],
        "mode": s.mode,
        "replicas": s.replicas,
        "endpoint_mode": s.endpoint_mode,
        "constraints": list(s.constraints),
        "preferences": list(s.preferences),
        "max_replicas_per_node": s.max_replicas_per_node,
        "restart": None if rp is None else (rp.condition, rp.delay, rp.max_attempts, rp.window),
        "update": upd[0],
        "rollback": upd[1],
        "limits": _pair(None if res is None else (res.limit_nano_cpus, res.limit_memory)),
        "reservations": _pair(None if res is None else (res.reserve_nano_cpus, res.reserve_memory)),
        "deploy_labels": s.deploy_labels,
        "labels": s.labels,
        "logging": None if s.logging is None else (s.logging.driver, s.logging.options),
        "healthcheck": None if hc is None else (list(hc.test), hc.interval, hc.timeout, hc.retries, hc.start_period),
        "hostname": s.hostname,
        "user": s.user,
        "working_dir": s.working_dir,
        "stop_grace_period": s.stop_grace_period,
        "stop_signal": s.stop_signal,
        "extra_hosts": list(s.extra_hosts),
        "cap_add": list(s.cap_add),
        "cap_drop": list(s.cap_drop),
        "sysctls": s.sysctls,
        "init": s.init,
        "read_only": s.read_only,
        "dns": list(s.dns),
        "dns_search": list(s.dns_search),
    }  # fmt: skip


def canonical_import(model: ComposeFile) -> dict[str, Any]:
    return {
        "services": {name: _canonical_service(s) for name, s in model.services.items()},
        "networks": {
            k: (n.external, n.name, n.driver, n.driver_opts, n.attachable, n.internal, n.labels, list(n.subnets))
            for k, n in model.networks.items()
        },
        "volumes": {k: (v.external, v.name, v.driver, v.driver_opts, v.labels) for k, v in model.volumes.items()},
        "configs": {k: c.content for k, c in model.configs.items()},
        "secrets": {k: s.file_content for k, s in model.secrets.items()},
    }


def _json_like(value: Any) -> Any:
    """Tuples and lists compare equal after this; the canonical shapes mix both."""
    if isinstance(value, dict):
        return {k: _json_like(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_like(v) for v in value]
    return value


def assert_same_as_docker(file: Path, variables: dict[str, str], model: ComposeFile) -> None:
    rc, doc, stderr = docker_stack_config(file, variables)
    assert rc == 0, f"docker stack config refused {file}: {stderr}"
    expected = _json_like(canonical_docker(doc))
    actual = _json_like(canonical_import(model))
    for name in expected["services"]:
        assert actual["services"].get(name) == expected["services"][name], f"service {name} differs from Docker"
    assert actual == expected
