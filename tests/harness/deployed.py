"""What a stack's services look like once deployed, in one shape for both sides of the fidelity test:

- `from_docker`: what `docker stack deploy` would create from `docker stack config -c <file>` of a compose file.
  The conversions are Docker's own, as documented and as docker/cli's `compose/convert` does them: names are
  `<stack>_<key>` unless the file names the object or it is external, every network gets the compose service
  name as an alias after the file's own, services carry the `com.docker.stack.namespace` label (and the
  service the `com.docker.stack.image` one), and what the file leaves out Swarm fills with its defaults
  (restart: any, 5s, no attempt limit, no window; endpoint mode vip; one replica).
- `from_inputs`: the same, read from the `docker.Service` inputs the program registered.

Durations are nanoseconds, sizes bytes, CPUs nano-CPUs, lists of unordered things sorted.
"""

from __future__ import annotations

import re
from typing import Any

from components.units import parse_duration

NAMESPACE = "com.docker.stack.namespace"
IMAGE = "com.docker.stack.image"
SWARM_RESTART = ("any", 5_000_000_000, 0, 0)


def _ns(value: Any) -> int | None:
    return None if value is None else parse_duration(str(value))


def _named(section: dict[str, Any], key: str, stack: str) -> str:
    body = section.get(key) or {}
    if body.get("external"):
        return body.get("name") or key
    return body.get("name") or f"{stack}_{key}"


def _refs(refs: list[dict[str, Any]] | None, kind: str) -> list[tuple]:
    out = []
    for r in refs or []:
        default = f"/{r['source']}" if kind == "configs" else r["source"]
        target = r.get("target") or default  # a relative secret target is under /run/secrets, for Swarm too
        out.append((r["source"], target, str(r.get("uid", "0")), str(r.get("gid", "0")), r.get("mode", 0o444)))
    return sorted(out)


def _update(body: dict[str, Any] | None) -> tuple | None:
    if not body:
        return None
    ratio = body.get("max_failure_ratio")
    return (body.get("parallelism"), _ns(body.get("delay")), body.get("failure_action"), _ns(body.get("monitor")),
            None if ratio in (None, 0) else float(ratio), body.get("order"))  # fmt: skip


def _limits(body: dict[str, Any] | None) -> tuple | None:
    if not body or (body.get("cpus") is None and body.get("memory") is None):
        return None
    cpus, memory = body.get("cpus"), body.get("memory")
    return (None if cpus is None else round(float(cpus) * 1e9), None if memory is None else int(memory))


def from_docker(doc: dict[str, Any], stack: str, log_driver: str) -> dict[str, dict[str, Any]]:
    """Compose service name -> the service `docker stack deploy` would create from this normalised file."""
    networks_section = doc.get("networks") or {}
    volumes_section = doc.get("volumes") or {}
    out = {}
    for name, s in doc["services"].items():
        deploy = s.get("deploy") or {}
        placement = deploy.get("placement") or {}
        res = deploy.get("resources") or {}
        nets = s.get("networks") or {"default": None}
        nets = {n: None for n in nets} if isinstance(nets, list) else nets
        rp = deploy.get("restart_policy") or {}
        restart = (rp.get("condition", SWARM_RESTART[0]), _ns(rp.get("delay")) if "delay" in rp else SWARM_RESTART[1],
                   rp.get("max_attempts", SWARM_RESTART[2]),
                   _ns(rp.get("window")) if "window" in rp else SWARM_RESTART[3])  # fmt: skip
        mounts = []
        for m in s.get("volumes") or []:
            source = m.get("source")
            if m["type"] == "volume" and source:
                source = _named(volumes_section, source, stack)
            mounts.append((m["type"], source, m["target"], bool(m.get("read_only")),
                           bool((m.get("volume") or {}).get("nocopy")), (m.get("bind") or {}).get("propagation"),
                           (m.get("tmpfs") or {}).get("size")))  # fmt: skip
        hc = s.get("healthcheck")
        logging = s.get("logging")
        mode = deploy.get("mode", "replicated")
        out[name] = {
            "image": s["image"],
            "entrypoint": s.get("entrypoint"),
            "command": s.get("command"),
            "environment": {k: str(v) for k, v in (s.get("environment") or {}).items() if v is not None},
            "networks": {
                _named(networks_section, key, stack): sorted({*((body or {}).get("aliases") or []), name})
                for key, body in nets.items()
            },
            "ports": sorted((p["target"], p.get("published"), p.get("protocol", "tcp"), p.get("mode", "ingress"))
                            for p in s.get("ports") or []),  # fmt: skip
            "mounts": sorted(mounts, key=repr),
            "configs": _refs(s.get("configs"), "configs"),
            "secrets": _refs(s.get("secrets"), "secrets"),
            "mode": mode,
            "replicas": deploy.get("replicas", 1) if mode == "replicated" else None,
            "endpoint_mode": deploy.get("endpoint_mode") or "vip",
            "constraints": sorted(placement.get("constraints") or []),
            "preferences": [f"spread={p['spread']}" for p in placement.get("preferences") or []],
            "max_replicas_per_node": placement.get("max_replicas_per_node"),
            "restart": restart,
            "update": _update(deploy.get("update_config")),
            "rollback": _update(deploy.get("rollback_config")),
            "limits": _limits(res.get("limits")),
            "reservations": _limits(res.get("reservations")),
            "service_labels": {**(deploy.get("labels") or {}), NAMESPACE: stack, IMAGE: s["image"]},
            "container_labels": {**(s.get("labels") or {}), NAMESPACE: stack},
            "logging": None if not logging else (logging.get("driver") or log_driver, logging.get("options") or {}),
            "healthcheck": None if not hc else (hc.get("test"), _ns(hc.get("interval")), _ns(hc.get("timeout")),
                                                hc.get("retries"), _ns(hc.get("start_period"))),  # fmt: skip
            "hostname": s.get("hostname"),
            "user": s.get("user"),
            "working_dir": s.get("working_dir"),
            "stop_grace_period": _ns(s.get("stop_grace_period")),
            "stop_signal": s.get("stop_signal"),
            "extra_hosts": sorted(tuple(h.split(":", 1)) for h in s.get("extra_hosts") or []),
            "cap_add": sorted(s.get("cap_add") or []),
            "cap_drop": sorted(s.get("cap_drop") or []),
            "sysctls": {k: str(v) for k, v in (s.get("sysctls") or {}).items()},
            "init": s.get("init"),
            "read_only": s.get("read_only"),
            "dns": (s.get("dns") or [], s.get("dns_search") or [], s.get("dns_opt") or []),
        }
    return out


def _labels(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {i["label"]: i["value"] for i in items or []}


def from_inputs(resources: list[dict[str, Any]], stack: str) -> dict[str, dict[str, Any]]:
    """Compose service name -> the service as the program registered it (`docker:index/service:Service` inputs of
    the stack's AppStack, as the recording mock engine saw them)."""
    network_names = {f"{r['name']}-id": r["inputs"]["name"] for r in resources if r["type"].endswith("network:Network")}
    out = {}
    for r in resources:
        inputs = r["inputs"] or {}
        if not r["type"].endswith("service:Service") or not inputs.get("name", "").startswith(f"{stack}_"):
            continue
        if _labels(inputs.get("labels")).get(NAMESPACE) != stack:
            continue
        name = inputs["name"].removeprefix(f"{stack}_")
        task = inputs["taskSpec"]
        c = task["containerSpec"]
        placement = task.get("placement") or {}
        res = task.get("resources") or {}
        rp = task.get("restartPolicy") or {}
        mode = inputs.get("mode") or {}
        hc = c.get("healthcheck")
        log = task.get("logDriver")
        dns = c.get("dnsConfig") or {}

        def update(body: dict[str, Any] | None) -> tuple | None:
            if not body:
                return None
            ratio = body.get("maxFailureRatio")
            failure_ratio = None if ratio in (None, "0") else float(ratio)
            return (body.get("parallelism"), _ns(body.get("delay")), body.get("failureAction"),
                    _ns(body.get("monitor")), failure_ratio, body.get("order"))  # fmt: skip

        def limits(body: dict[str, Any] | None) -> tuple | None:
            if not body or (body.get("nanoCpus") is None and body.get("memoryBytes") is None):
                return None
            return (body.get("nanoCpus"), body.get("memoryBytes"))

        out[name] = {
            "image": c["image"],
            "entrypoint": c.get("commands"),
            "command": c.get("args"),
            "environment": c.get("env") or {},
            "networks": {
                network_names[n["id"]]: sorted(n.get("aliases") or []) for n in task.get("networksAdvanceds") or []
            },
            "ports": sorted((p["targetPort"], p.get("publishedPort"), p.get("protocol", "tcp"),
                             p.get("publishMode", "ingress")) for p in (inputs.get("endpointSpec") or {}).get("ports")
                            or []),  # fmt: skip
            "mounts": sorted(
                ((m["type"], m.get("source"), m["target"], bool(m.get("readOnly")),
                  bool((m.get("volumeOptions") or {}).get("noCopy")), (m.get("bindOptions") or {}).get("propagation"),
                  (m.get("tmpfsOptions") or {}).get("sizeBytes")) for m in c.get("mounts") or []),
                key=repr,
            ),  # fmt: skip
            "configs": sorted(
                (re.sub(r"-[0-9a-f]{12}$", "", ref["configName"]).removeprefix(f"{stack}_"), ref["fileName"],
                 ref.get("fileUid", "0"), ref.get("fileGid", "0"), ref.get("fileMode", 0o444))
                for ref in c.get("configs") or []
            ),  # fmt: skip
            "secrets": sorted(
                (ref["secretId"].removesuffix("-id").removeprefix(f"{stack}_"), ref["fileName"],
                 ref.get("fileUid", "0"), ref.get("fileGid", "0"), ref.get("fileMode", 0o444))
                for ref in c.get("secrets") or []
            ),  # fmt: skip
            "mode": "global" if mode.get("global") else "replicated",
            "replicas": None if mode.get("global") else (mode.get("replicated") or {}).get("replicas", 1),
            "endpoint_mode": (inputs.get("endpointSpec") or {}).get("mode") or "vip",
            "constraints": sorted(placement.get("constraints") or []),
            "preferences": placement.get("prefs") or [],
            "max_replicas_per_node": placement.get("maxReplicas"),
            "restart": (rp.get("condition"), _ns(rp.get("delay")), rp.get("maxAttempts"), _ns(rp.get("window"))),
            "update": update(inputs.get("updateConfig")),
            "rollback": update(inputs.get("rollbackConfig")),
            "limits": limits(res.get("limits")),
            "reservations": limits(res.get("reservation")),
            "service_labels": _labels(inputs.get("labels")),
            "container_labels": _labels(c.get("labels")),
            "logging": None if not log else (log["name"], log.get("options") or {}),
            "healthcheck": None if not hc else (hc.get("tests"), _ns(hc.get("interval")), _ns(hc.get("timeout")),
                                                hc.get("retries"), _ns(hc.get("startPeriod"))),  # fmt: skip
            "hostname": c.get("hostname"),
            "user": c.get("user"),
            "working_dir": c.get("dir"),
            "stop_grace_period": _ns(c.get("stopGracePeriod")),
            "stop_signal": c.get("stopSignal"),
            "extra_hosts": sorted((h["host"], h["ip"]) for h in c.get("hosts") or []),
            "cap_add": sorted(c.get("capAdds") or []),
            "cap_drop": sorted(c.get("capDrops") or []),
            "sysctls": c.get("sysctl") or {},
            "init": c.get("init"),
            "read_only": c.get("readOnly"),
            "dns": (dns.get("nameservers") or [], dns.get("searches") or [], dns.get("options") or []),
        }
    return out
