"""AppStack against the reference implementation: `docker stack deploy` on a real (isolated) swarm.

For each stack, the compose file the AppStack publishes (estate applied) is deployed with the
real Docker CLI onto a one-node swarm of an isolated engine (no image is pulled: tasks never
start, only the service specs matter). Each resulting service spec is compared with the inputs
the AppStack sends the docker provider, mapped to the Swarm API's shape. Fields either side
leaves unset take the Swarm defaults, which `docker service inspect` shows.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.compose.apply import import_stacks
from components.compose.spec import ImportedStack
from components.model import load_estate
from components.platform_stacks import platform_stacks
from components.render.compose import config_names, render_compose
from components.units import parse_duration
from tests.harness import Engine
from tests.harness.project import (
    COMPOSE_CASES,
    COMPOSE_FIDELITY,
    FIDELITY_CASES,
    FIDELITY_SECRETS,
    ROOT,
    TEST_SECRETS,
    estate_of,
    fidelity_estate,
    load_yaml,
)
from tests.harness.specs import synth_stacks
from tests.harness.wait import wait_until
from tools.images import busybox_image

pytestmark = pytest.mark.slow

SECOND = 10**9
# What Swarm fills in for a field the spec leaves out (swarmkit's defaults, as inspect shows them).
UPDATE_DEFAULTS = {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5 * SECOND, "MaxFailureRatio": 0.0,
                   "Order": "stop-first", "Delay": 0}  # fmt: skip
RESTART_DEFAULTS = {"Condition": "any", "Delay": 5 * SECOND, "MaxAttempts": 0, "Window": 0}
STOP_GRACE_DEFAULT = 10 * SECOND
RUNNING_TIMEOUT_S = 90


def _swarm_ports_free() -> None:
    """This engine's swarm runs in the machine's own network namespace, where the swarm ports are fixed (gossip on
    7946 has no option): a second swarm manager on the machine would half-work (no overlay DNS). Say so plainly."""
    for port in (2377, 7946):
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                pytest.fail(f"port {port} is taken: another swarm manager runs on this machine (docker info, "
                            "Swarm: active); leave it (docker swarm leave --force) or stop that engine")  # fmt: skip


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    eng = Engine.start()
    try:
        _swarm_ports_free()
        eng.run("swarm", "init", "--advertise-addr", "127.0.0.1")
        eng.run("network", "create", "-d", "overlay", "--attachable", "haproxy-public")
        yield eng
    finally:
        eng.stop()


def _caps(caps: list[str] | None) -> list[str]:
    """The CLI writes NET_ADMIN as CAP_NET_ADMIN; the engine treats both alike."""
    return sorted(c if c == "ALL" or c.startswith("CAP_") else f"CAP_{c}" for c in caps or [])


def _ports(ports: list[tuple]) -> list[tuple]:
    """The engine keeps its own port order; an unpublished port has no number, hence key=str."""
    return sorted(ports, key=str)


def _update(cfg: dict[str, Any] | None) -> dict[str, Any]:
    return {**UPDATE_DEFAULTS, **{k: v for k, v in (cfg or {}).items() if v is not None}}


def from_swarm(spec: dict[str, Any], network_names: dict[str, str], external: set[str]) -> dict[str, Any]:
    task = spec["TaskTemplate"]
    cs = task["ContainerSpec"]
    placement = task.get("Placement") or {}
    res = task.get("Resources") or {}
    hc = cs.get("Healthcheck")
    nets = []
    for n in task.get("Networks") or []:
        # aliases as docker stack deploy gives them: the file's and the compose service name, on every network
        nets.append((network_names[n["Target"]], sorted(n.get("Aliases") or [])))
    return {
        "name": spec["Name"],
        "labels": spec.get("Labels") or {},
        "mode": "global" if "Global" in spec["Mode"] else spec["Mode"]["Replicated"]["Replicas"],
        "endpoint_mode": (spec.get("EndpointSpec") or {}).get("Mode", "vip"),
        "ports": _ports(
            [
                (p["TargetPort"], p.get("PublishedPort"), p.get("Protocol", "tcp"), p.get("PublishMode", "ingress"))
                for p in (spec.get("EndpointSpec") or {}).get("Ports") or []
            ]
        ),
        "image": cs["Image"],
        "command": cs.get("Command"),
        "args": cs.get("Args"),
        "env": sorted(cs.get("Env") or []),
        "dir": cs.get("Dir"),
        "user": cs.get("User"),
        "hostname": cs.get("Hostname"),
        "container_labels": cs.get("Labels") or {},
        "mounts": [
            (
                m["Type"],
                m.get("Source"),
                m["Target"],
                bool(m.get("ReadOnly")),
                ((m.get("VolumeOptions") or {}).get("DriverConfig") or {}).get("Name"),
                ((m.get("VolumeOptions") or {}).get("DriverConfig") or {}).get("Options") or {},
                (m.get("VolumeOptions") or {}).get("Labels") or {},
                bool((m.get("VolumeOptions") or {}).get("NoCopy")),
                (m.get("BindOptions") or {}).get("Propagation"),
                (m.get("TmpfsOptions") or {}).get("SizeBytes"),
            )
            for m in cs.get("Mounts") or []
        ],  # fmt: skip
        "configs": sorted(
            [
                (c["File"]["Name"], c["File"]["UID"], c["File"]["GID"], c["File"]["Mode"], c["ConfigName"])
                for c in cs.get("Configs") or []
            ]
        ),  # fmt: skip
        "secrets": sorted(
            [
                (s["File"]["Name"], s["File"]["UID"], s["File"]["GID"], s["File"]["Mode"])
                for s in cs.get("Secrets") or []
            ]
        ),  # fmt: skip
        "healthcheck": None
        if not hc
        else (
            hc.get("Test"),
            hc.get("Interval"),
            hc.get("Timeout"),
            hc.get("Retries"),
            hc.get("StartPeriod"),
        ),  # fmt: skip
        "stop_grace_period": cs.get("StopGracePeriod", STOP_GRACE_DEFAULT),
        "stop_signal": cs.get("StopSignal"),
        "hosts": cs.get("Hosts") or [],
        "cap_add": _caps(cs.get("CapabilityAdd")),
        "cap_drop": _caps(cs.get("CapabilityDrop")),
        "sysctls": cs.get("Sysctls") or {},
        "init": cs.get("Init"),
        "read_only": bool(cs.get("ReadOnly")),
        "dns": {k: v for k, v in (cs.get("DNSConfig") or {}).items() if v},
        "restart": {**RESTART_DEFAULTS, **(task.get("RestartPolicy") or {})},
        "constraints": placement.get("Constraints") or [],
        "preferences": [p["Spread"]["SpreadDescriptor"] for p in placement.get("Preferences") or []],
        "max_replicas": placement.get("MaxReplicas"),
        "limits": res.get("Limits") or {},
        "reservations": res.get("Reservations") or {},
        "log": task.get("LogDriver"),
        "networks": sorted(nets),
        "update": _update(spec.get("UpdateConfig")),
        "rollback": _update(spec.get("RollbackConfig")),
    }


def _ns(value: str | None) -> int | None:
    return None if value is None else parse_duration(value)


def _provider_update(cfg: dict[str, Any] | None) -> dict[str, Any]:
    cfg = cfg or {}
    ratio = cfg.get("maxFailureRatio")
    return _update(
        {
            "Parallelism": cfg.get("parallelism"),
            "Delay": _ns(cfg.get("delay")),
            "FailureAction": cfg.get("failureAction"),
            "Monitor": _ns(cfg.get("monitor")),
            "MaxFailureRatio": None if ratio is None else float(ratio),
            "Order": cfg.get("order"),
        }
    )


def from_provider(inputs: dict[str, Any], network_names: dict[str, str]) -> dict[str, Any]:
    """The docker provider's Service inputs, in the Swarm API's terms."""
    task = inputs["taskSpec"]
    cs = task["containerSpec"]
    placement = task.get("placement") or {}
    res = task.get("resources") or {}
    hc = cs.get("healthcheck")
    rp = task.get("restartPolicy") or {}
    dns = cs.get("dnsConfig") or {}
    mode = inputs["mode"]

    def labels(items: list[dict[str, str]] | None) -> dict[str, str]:
        return {i["label"]: i["value"] for i in items or []}

    def swarm_resources(part: dict[str, Any] | None) -> dict[str, Any]:
        part = part or {}
        return {k: v for k, v in (("NanoCPUs", part.get("nanoCpus")), ("MemoryBytes", part.get("memoryBytes"))) if v}

    return {
        "name": inputs["name"],
        "labels": labels(inputs.get("labels")),
        "mode": "global" if mode.get("global") else mode["replicated"]["replicas"],
        "endpoint_mode": inputs["endpointSpec"]["mode"],
        "ports": _ports(
            [
                (p["targetPort"], p.get("publishedPort"), p.get("protocol", "tcp"), p.get("publishMode", "ingress"))
                for p in inputs["endpointSpec"].get("ports") or []
            ]
        ),
        "image": cs["image"],
        "command": cs.get("commands"),
        "args": cs.get("args"),
        "env": sorted(f"{k}={v}" for k, v in (cs.get("env") or {}).items()),
        "dir": cs.get("dir"),
        "user": cs.get("user"),
        "hostname": cs.get("hostname"),
        "container_labels": labels(cs.get("labels")),
        "mounts": [
            (
                m["type"],
                m.get("source"),
                m["target"],
                bool(m.get("readOnly")),
                (m.get("volumeOptions") or {}).get("driverName"),
                (m.get("volumeOptions") or {}).get("driverOptions") or {},
                labels((m.get("volumeOptions") or {}).get("labels")),
                bool((m.get("volumeOptions") or {}).get("noCopy")),
                (m.get("bindOptions") or {}).get("propagation"),
                (m.get("tmpfsOptions") or {}).get("sizeBytes"),
            )
            for m in cs.get("mounts") or []
        ],  # fmt: skip
        "configs": sorted(
            [
                (c["fileName"], c["fileUid"], c["fileGid"], c["fileMode"], c["configName"])
                for c in cs.get("configs") or []
            ]
        ),  # fmt: skip
        "secrets": sorted(
            [(s["fileName"], s["fileUid"], s["fileGid"], s["fileMode"]) for s in cs.get("secrets") or []]
        ),
        "healthcheck": None
        if not hc
        else (
            hc["tests"],
            _ns(hc.get("interval")),
            _ns(hc.get("timeout")),
            hc.get("retries"),
            _ns(hc.get("startPeriod")),
        ),  # fmt: skip
        "stop_grace_period": _ns(cs.get("stopGracePeriod")) or STOP_GRACE_DEFAULT,
        "stop_signal": cs.get("stopSignal"),
        "hosts": [f"{h['ip']} {h['host']}" for h in cs.get("hosts") or []],
        "cap_add": _caps(cs.get("capAdds")),
        "cap_drop": _caps(cs.get("capDrops")),
        "sysctls": cs.get("sysctl") or {},
        "init": cs.get("init"),
        "read_only": bool(cs.get("readOnly")),
        "dns": {
            k: v
            for k, v in (
                ("Nameservers", dns.get("nameservers")),
                ("Search", dns.get("searches")),
                ("Options", dns.get("options")),
            )
            if v
        },  # fmt: skip
        "restart": {
            **RESTART_DEFAULTS,
            **{
                k: v
                for k, v in (
                    ("Condition", rp.get("condition")),
                    ("Delay", _ns(rp.get("delay"))),
                    ("MaxAttempts", rp.get("maxAttempts")),
                    ("Window", _ns(rp.get("window"))),
                )
                if v is not None
            },
        },  # fmt: skip
        "constraints": placement.get("constraints") or [],
        "preferences": [p.removeprefix("spread=") for p in placement.get("prefs") or []],
        "max_replicas": placement.get("maxReplicas"),
        "limits": swarm_resources(res.get("limits")),
        "reservations": swarm_resources(res.get("reservation")),
        "log": None
        if not task.get("logDriver")
        else {
            "Name": task["logDriver"]["name"],
            **({"Options": task["logDriver"]["options"]} if task["logDriver"].get("options") else {}),
        },  # fmt: skip
        "networks": sorted((network_names[n["id"]], sorted(n.get("aliases") or [])) for n in task["networksAdvanceds"]),
        "update": _provider_update(inputs.get("updateConfig")),
        "rollback": _provider_update(inputs.get("rollbackConfig")),
    }


def deploy_with_docker(engine: Engine, stack: ImportedStack, workdir: Path) -> dict[str, dict[str, Any]]:
    compose = workdir / f"{stack.name}.yml"
    compose.write_text(render_compose(stack))
    for key, name in config_names(stack).items():
        engine.run("config", "create", name, "-", input=stack.configs[key].content)
    for key in stack.secrets:
        engine.run("secret", "create", f"{stack.name}_{key}", "-", input="not the real secret")
    engine.run("stack", "deploy", "--resolve-image", "never", "-c", str(compose), stack.name, timeout=120)
    out = {}
    for svc in stack.services:
        (info,) = json.loads(engine.run("service", "inspect", f"{stack.name}_{svc}").stdout)
        out[f"{stack.name}_{svc}"] = info["Spec"]
    return out


def network_names_of(engine: Engine) -> dict[str, str]:
    rows = engine.run("network", "ls", "--no-trunc", "--format", "{{.ID}} {{.Name}}").stdout.split("\n")
    return dict(row.split(" ", 1) for row in rows if row)


def compare(engine: Engine, raw: dict[str, Any], project: Path, secrets: dict[str, str] | None = None) -> int:
    spec = load_estate(raw)
    stacks = {**import_stacks(spec, project), **platform_stacks(spec)}
    synth = synth_stacks(raw, project, secrets)
    mock_networks = {f"{r['name']}-id": r["inputs"]["name"] for r in synth.resources if r["type"].endswith("Network")}
    ours = {r["inputs"]["name"]: r["inputs"] for r in synth.resources if r["type"] == "docker:index/service:Service"}
    external = {spec.public_network.name, *(o.name for o in spec.overlays)}
    compared = 0
    with tempfile.TemporaryDirectory() as tmp:
        for stack in stacks.values():
            specs = deploy_with_docker(engine, stack, Path(tmp))
            names = network_names_of(engine)
            for service, swarm_spec in specs.items():
                expected = from_swarm(swarm_spec, names, external)
                actual = from_provider(ours[service], mock_networks)
                for key in expected:
                    assert actual[key] == expected[key], f"{service}: {key}"
                compared += 1
    return compared


def test_prod_stacks_match_docker_stack_deploy(engine: Engine):
    assert compare(engine, estate_of("prod"), ROOT) == 9


def test_every_compose_feature_matches_docker_stack_deploy(engine: Engine):
    raw = estate_of("dev")
    raw["stacks"] = {
        "sink": {"compose": "kitchen_sink/docker-compose.yml"},
        "short": {"compose": "short_and_long/docker-compose.yml"},
        "demo": {
            "compose": str(ROOT / "stacks/demo/docker-compose.yml"),
            "services": raw["stacks"]["demo"]["services"],
        },
    }
    assert compare(engine, raw, COMPOSE_CASES) == 4


@pytest.mark.parametrize("case", FIDELITY_CASES)
def test_the_fidelity_fixtures_match_docker_stack_deploy(engine: Engine, case: str):
    """The stack files of tests/compose_fidelity/ (routing applied), deployed for real by `docker stack deploy`,
    give the services the AppStack registers, aliases on shared overlays included."""
    fixture = load_yaml(COMPOSE_FIDELITY / case / "stack.yml")
    raw = fidelity_estate(case, case)
    existing = set(network_names_of(engine).values())
    for overlay in fixture.get("overlays") or []:
        if overlay["name"] not in existing:
            engine.run("network", "create", "-d", "overlay", "--attachable", overlay["name"])
    assert compare(engine, raw, COMPOSE_FIDELITY, {**TEST_SECRETS, **FIDELITY_SECRETS}) == sum(
        len(load_yaml(COMPOSE_FIDELITY / case / body["compose"])["services"]) for body in fixture["stacks"].values()
    )


def test_demo_serves_health_to_l7_by_its_swarm_name(engine: Engine):
    """What the L7 HAProxy does: resolve `<stack>_web` on haproxy-public (dnsrr) and GET /health."""
    image = busybox_image(engine)
    raw = estate_of("dev")
    raw["stacks"]["demo"]["variables"] = {"DEMO_IMAGE": image}
    stack = dataclasses.replace(import_stacks(load_estate(raw), ROOT)["demo"], name="live")
    with tempfile.TemporaryDirectory() as tmp:
        deploy_with_docker(engine, stack, Path(tmp))

    def states() -> str:
        return engine.run("service", "ps", "live_web", "--filter", "desired-state=running",
                          "--format", "{{.CurrentState}}").stdout  # fmt: skip

    # the healthcheck passed on both replicas
    wait_until(lambda: states().count("Running") == 2, RUNNING_TIMEOUT_S, "both demo tasks healthy", every=1)
    client = ["run", "--rm", "--network", "haproxy-public", image, "wget", "-q", "-O-"]

    def health() -> str:
        return engine.run(*client, "http://live_web:8080/health", check=False, timeout=60).stdout

    # A task is Running before Docker's DNS on the overlay knows it: name registration is asynchronous.
    assert wait_until(health, RUNNING_TIMEOUT_S, "live_web to resolve and answer /health", every=1) == "ok\n"
    assert "swarm-estate demo" in engine.run(*client, "http://live_web:8080/", timeout=60).stdout
