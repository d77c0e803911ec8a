"""Docker provider inputs (as the engine receives them, camelCase) -> Docker Engine API request bodies.

Pure functions. Every property a resource sets must be read by its mapping: `Props.done()` fails
naming the resource type and the property path of whatever was left unread, so a property the
program starts to set cannot be silently dropped by the replay.
"""

from __future__ import annotations

import base64
import re
from typing import Any

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


class UnmappedPropertyError(RuntimeError):
    """The program sets a property the replay does not know how to perform."""


class Props:
    """A provider input object whose reads are tracked."""

    def __init__(self, typ: str, path: str, data: dict[str, Any], resource: str = ""):
        self.typ, self.path, self.data, self.resource = typ, path, data, resource
        self._read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self._read.add(key)
        value = self.data.get(key)
        return default if value is None else value

    def ignore(self, *keys: str) -> None:
        """Properties only the provider itself acts on (not part of the engine's object)."""
        self._read.update(keys)

    def sub(self, key: str) -> Props | None:
        value = self.get(key)
        return Props(self.typ, f"{self.path}{key}.", value) if isinstance(value, dict) else None

    def each(self, key: str) -> list[Props]:
        return [Props(self.typ, f"{self.path}{key}[{i}].", v) for i, v in enumerate(self.get(key, []))]

    def done(self) -> None:
        left = sorted(k for k in set(self.data) - self._read if k != "__defaults")
        if left:
            names = ", ".join(self.path + k for k in left)
            raise UnmappedPropertyError(f"{self.typ}: the replay does not map property {names}")


def duration_ns(value: str | None) -> int | None:
    """A Go duration string ("1m30s", "500ms") in nanoseconds."""
    if value is None:
        return None
    if value in ("0", ""):
        return 0
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a duration: {value!r}")
    return int(sum(float(n) * _UNIT_NS[u] for n, u in parts))


def labels(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {item["label"]: item["value"] for item in items or []}


def _drop_none(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if v is not None and v != {} and v != []}


# --- local objects: networks, volumes, containers ----------------------------------------------


def network_body(p: Props) -> dict[str, Any]:
    ipam = []
    for c in p.each("ipamConfigs"):
        ipam.append(_drop_none({"Subnet": c.get("subnet"), "Gateway": c.get("gateway"), "IPRange": c.get("ipRange"),
                                "AuxiliaryAddresses": c.get("auxAddress")}))
        c.done()
    body = _drop_none({
        "Name": p.get("name"),
        "Driver": p.get("driver", "bridge"),
        "Attachable": p.get("attachable"),
        "Internal": p.get("internal"),
        "Ingress": p.get("ingress"),
        "EnableIPv6": p.get("ipv6"),
        "Options": p.get("options"),
        "Labels": labels(p.get("labels")),
        "IPAM": _drop_none({"Driver": p.get("ipamDriver", "default"), "Config": ipam,
                            "Options": p.get("ipamOptions")}),
    })
    body["CheckDuplicate"] = bool(p.get("checkDuplicate", True))
    p.done()
    return body


def volume_body(p: Props) -> dict[str, Any]:
    body = _drop_none({"Name": p.get("name"), "Driver": p.get("driver", "local"), "DriverOpts": p.get("driverOpts"),
                       "Labels": labels(p.get("labels"))})
    p.done()
    return body


def container_body(p: Props) -> tuple[str, dict[str, Any], list[str], list[tuple[str, bytes, int]], list[dict]]:
    """(name, create body, networks to connect after create, files to upload before start, extra endpoints)."""
    exposed: dict[str, dict] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for port in p.each("ports"):
        key = f"{port.get('internal')}/{port.get('protocol', 'tcp')}"
        exposed[key] = {}
        external = port.get("external")
        bindings.setdefault(key, []).append(_drop_none({"HostIp": port.get("ip", "0.0.0.0"),
                                                        "HostPort": None if external is None else str(external)}))
        port.done()
    binds, mounts = [], []
    for v in p.each("volumes"):
        source = v.get("volumeName") or v.get("hostPath")
        target = v.get("containerPath")
        mode = "ro" if v.get("readOnly") else "rw"
        if source:
            binds.append(f"{source}:{target}:{mode}")
        else:
            mounts.append({"Type": "volume", "Target": target})
        v.done()
    networks = p.each("networksAdvanced")
    endpoints = []
    for n in networks:
        ipam = _drop_none({"IPv4Address": n.get("ipv4Address"), "IPv6Address": n.get("ipv6Address")})
        config = _drop_none({"IPAMConfig": ipam, "Aliases": n.get("aliases")})
        endpoints.append({"name": n.get("name"), "config": config})
        n.done()
    caps = p.sub("capabilities")
    cap_add, cap_drop = (caps.get("adds"), caps.get("drops")) if caps else (None, None)
    if caps:
        caps.done()
    files = []
    for u in p.each("uploads"):
        if u.get("content") is not None:
            content = u.get("content").encode()
        elif u.get("contentBase64") is not None:
            content = base64.b64decode(u.get("contentBase64"))
        else:
            raise UnmappedPropertyError(f"{p.typ}: uploads[].source (a host file) is not mapped")
        files.append((u.get("file"), content, 0o755 if u.get("executable") else 0o644))
        u.done()
    host = _drop_none({
        "Init": p.get("init"),
        "Privileged": p.get("privileged"),
        "CapAdd": cap_add,
        "CapDrop": cap_drop,
        "SecurityOpt": p.get("securityOpts"),
        "RestartPolicy": {"Name": p.get("restart", "no")},
        "PortBindings": bindings,
        "Binds": binds,
        "Mounts": mounts,
        "Tmpfs": p.get("tmpfs"),
        "Sysctls": p.get("sysctls"),
        "ShmSize": p.get("shmSize"),
        "Dns": p.get("dns"),
        # The first networks_advanced entry is the container's network, as `docker run --network` does;
        # without one, the engine's default.
        "NetworkMode": p.get("networkMode") or (endpoints[0]["name"] if endpoints else None),
    })
    body = _drop_none({
        "Image": p.get("image"),
        "Hostname": p.get("hostname"),
        "Domainname": p.get("domainname"),
        "User": p.get("user"),
        "WorkingDir": p.get("workingDir"),
        "Entrypoint": p.get("entrypoints"),
        "Cmd": p.get("commands"),
        "Env": p.get("envs"),
        "Labels": labels(p.get("labels")),
        "ExposedPorts": exposed,
        "HostConfig": host,
        "NetworkingConfig": {"EndpointsConfig": {endpoints[0]["name"]: endpoints[0]["config"]}} if endpoints else None,
    })
    # Provider-side behaviour the replay performs itself (start, must_run) or has no engine field.
    p.ignore("mustRun", "start", "rm", "attach", "logs", "wait", "waitTimeout", "destroyGraceSeconds", "removeVolumes")
    name = p.get("name")
    p.done()
    return name, body, [e["name"] for e in endpoints[1:]], files, endpoints[1:]


# --- swarm objects ------------------------------------------------------------------------------


def config_body(p: Props) -> dict[str, Any]:
    body = {"Name": p.get("name"), "Data": p.get("data"), "Labels": labels(p.get("labels"))}
    p.done()
    return body


def secret_body(p: Props) -> dict[str, Any]:
    return config_body(p)


def _update_config(p: Props | None) -> dict[str, Any] | None:
    if p is None:
        return None
    ratio = p.get("maxFailureRatio")
    body = _drop_none({
        "Parallelism": p.get("parallelism"),
        "Delay": duration_ns(p.get("delay")),
        "FailureAction": p.get("failureAction"),
        "Monitor": duration_ns(p.get("monitor")),
        "MaxFailureRatio": None if ratio is None else float(ratio),
        "Order": p.get("order"),
    })
    p.done()
    return body


def _file_refs(items: list[Props], id_key: str, api_id: str, name_key: str, api_name: str) -> list[dict[str, Any]]:
    refs = []
    for ref in items:
        # The provider's defaults for a file target: root-owned, mode 0444.
        refs.append({
            api_id: ref.get(id_key),
            api_name: ref.get(name_key),
            "File": {"Name": ref.get("fileName"), "UID": ref.get("fileUid", "0"), "GID": ref.get("fileGid", "0"),
                     "Mode": int(ref.get("fileMode", 0o444))},
        })
        ref.done()
    return refs


def _mount(m: Props) -> dict[str, Any]:
    vo, bo, to = m.sub("volumeOptions"), m.sub("bindOptions"), m.sub("tmpfsOptions")
    body = _drop_none({"Type": m.get("type"), "Target": m.get("target"), "Source": m.get("source"),
                       "ReadOnly": m.get("readOnly")})
    if vo is not None:
        body["VolumeOptions"] = _drop_none({
            "NoCopy": vo.get("noCopy"),
            "Labels": labels(vo.get("labels")),
            "DriverConfig": _drop_none({"Name": vo.get("driverName"), "Options": vo.get("driverOptions")}),
        })
        vo.done()
    if bo is not None:
        body["BindOptions"] = _drop_none({"Propagation": bo.get("propagation")})
        bo.done()
    if to is not None:
        body["TmpfsOptions"] = _drop_none({"SizeBytes": to.get("sizeBytes"), "Mode": to.get("mode")})
        to.done()
    m.done()
    return body


def _container_spec(c: Props) -> dict[str, Any]:
    hc = c.sub("healthcheck")
    health = None
    if hc is not None:
        health = _drop_none({"Test": hc.get("tests"), "Interval": duration_ns(hc.get("interval")),
                             "Timeout": duration_ns(hc.get("timeout")),
                             "StartPeriod": duration_ns(hc.get("startPeriod")), "Retries": hc.get("retries")})
        hc.done()
    dns = c.sub("dnsConfig")
    dns_body = None
    if dns is not None:
        dns_body = _drop_none({"Nameservers": dns.get("nameservers"), "Search": dns.get("searches"),
                               "Options": dns.get("options")})
        dns.done()
    hosts = []
    for h in c.each("hosts"):
        hosts.append(f"{h.get('ip')} {h.get('host')}")  # the API's hosts(5) form: IP, then name
        h.done()
    env = c.get("env")
    body = _drop_none({
        "Image": c.get("image"),
        "Command": c.get("commands"),
        "Args": c.get("args"),
        "Env": [f"{k}={v}" for k, v in env.items()] if env else None,
        "Dir": c.get("dir"),
        "User": c.get("user"),
        "Groups": c.get("groups"),
        "Hostname": c.get("hostname"),
        "Labels": labels(c.get("labels")),
        "Mounts": [_mount(m) for m in c.each("mounts")],
        "Configs": _file_refs(c.each("configs"), "configId", "ConfigID", "configName", "ConfigName"),
        "Secrets": _file_refs(c.each("secrets"), "secretId", "SecretID", "secretName", "SecretName"),
        "Healthcheck": health,
        "StopGracePeriod": duration_ns(c.get("stopGracePeriod")),
        "StopSignal": c.get("stopSignal"),
        "Hosts": hosts,
        "CapabilityAdd": c.get("capAdds"),
        "CapabilityDrop": c.get("capDrops"),
        "Sysctls": c.get("sysctl"),
        "Init": c.get("init"),
        "ReadOnly": c.get("readOnly"),
        "DNSConfig": dns_body,
        "Isolation": c.get("isolation"),
    })
    c.done()
    return body


def _placement(p: Props | None) -> dict[str, Any] | None:
    if p is None:
        return None
    prefs = []
    for pref in p.get("prefs", []):
        strategy, _, descriptor = pref.partition("=")
        if strategy != "spread":
            raise UnmappedPropertyError(f"{p.typ}: placement preference {pref!r} (only spread=… exists)")
        prefs.append({"Spread": {"SpreadDescriptor": descriptor}})
    platforms = []
    for plat in p.each("platforms"):
        platforms.append({"Architecture": plat.get("architecture"), "OS": plat.get("os")})
        plat.done()
    body = _drop_none({"Constraints": p.get("constraints"), "Preferences": prefs, "MaxReplicas": p.get("maxReplicas"),
                       "Platforms": platforms})
    p.done()
    return body


def _resources(p: Props | None) -> dict[str, Any] | None:
    if p is None:
        return None
    out: dict[str, Any] = {}
    limits = p.sub("limits")
    if limits is not None:
        out["Limits"] = _drop_none({"NanoCPUs": limits.get("nanoCpus"), "MemoryBytes": limits.get("memoryBytes")})
        limits.done()
    res = p.sub("reservation")
    if res is not None:
        generic = []
        gen = res.sub("genericResources")
        if gen is not None:
            for spec in gen.get("discreteResourcesSpecs", []):
                kind, _, value = spec.partition("=")
                generic.append({"DiscreteResourceSpec": {"Kind": kind, "Value": int(value)}})
            for spec in gen.get("namedResourcesSpecs", []):
                kind, _, value = spec.partition("=")
                generic.append({"NamedResourceSpec": {"Kind": kind, "Value": value}})
            gen.done()
        out["Reservations"] = _drop_none({"NanoCPUs": res.get("nanoCpus"), "MemoryBytes": res.get("memoryBytes"),
                                          "GenericResources": generic})
        res.done()
    p.done()
    return out


def service_spec(p: Props) -> dict[str, Any]:
    """The Swarm ServiceSpec of a docker.Service (convergeConfig/auth are the provider's own)."""
    task = p.sub("taskSpec")
    if task is None:
        raise UnmappedPropertyError(f"{p.typ}: a service without taskSpec")
    container = task.sub("containerSpec")
    if container is None:
        raise UnmappedPropertyError(f"{p.typ}: a service without taskSpec.containerSpec")
    networks = []
    for n in task.each("networksAdvanceds"):
        opts = n.get("driverOpts")
        networks.append(_drop_none({"Target": n.get("id"), "Aliases": n.get("aliases"),
                                    "DriverOpts": dict(o.split("=", 1) for o in opts) if opts else None}))
        n.done()
    restart = task.sub("restartPolicy")
    restart_body = None
    if restart is not None:
        restart_body = _drop_none({"Condition": restart.get("condition"), "Delay": duration_ns(restart.get("delay")),
                                   "MaxAttempts": restart.get("maxAttempts"),
                                   "Window": duration_ns(restart.get("window"))})
        restart.done()
    log = task.sub("logDriver")
    log_body = None
    if log is not None:
        log_body = _drop_none({"Name": log.get("name"), "Options": log.get("options")})
        log.done()
    template = _drop_none({
        "ContainerSpec": _container_spec(container),
        "Networks": networks,
        "Placement": _placement(task.sub("placement")),
        "Resources": _resources(task.sub("resources")),
        "RestartPolicy": restart_body,
        "LogDriver": log_body,
        "ForceUpdate": task.get("forceUpdate"),
        "Runtime": task.get("runtime"),
    })
    task.done()
    mode = p.sub("mode")
    mode_body: dict[str, Any] = {"Replicated": {"Replicas": 1}}
    if mode is not None:
        replicated = mode.sub("replicated")
        if mode.get("global"):
            mode_body = {"Global": {}}
        elif replicated is not None:
            mode_body = {"Replicated": {"Replicas": int(replicated.get("replicas", 1))}}
            replicated.done()
        mode.done()
    endpoint = p.sub("endpointSpec")
    endpoint_body = None
    if endpoint is not None:
        ports = []
        for port in endpoint.each("ports"):
            ports.append(_drop_none({"Name": port.get("name"), "Protocol": port.get("protocol", "tcp"),
                                     "TargetPort": port.get("targetPort"), "PublishedPort": port.get("publishedPort"),
                                     "PublishMode": port.get("publishMode", "ingress")}))
            port.done()
        endpoint_body = _drop_none({"Mode": endpoint.get("mode", "vip"), "Ports": ports})
        endpoint.done()
    spec = _drop_none({
        "Name": p.get("name"),
        "Labels": labels(p.get("labels")),
        "TaskTemplate": template,
        "Mode": mode_body,
        "UpdateConfig": _update_config(p.sub("updateConfig")),
        "RollbackConfig": _update_config(p.sub("rollbackConfig")),
        "EndpointSpec": endpoint_body,
    })
    p.ignore("convergeConfig")
    if p.get("auth") is not None:
        raise UnmappedPropertyError(f"{p.typ}: auth (registry credentials) is not mapped: the replay pulls nothing")
    p.done()
    return spec
