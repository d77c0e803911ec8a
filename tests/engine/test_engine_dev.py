"""The dev estate under the real Pulumi engine: `pulumi up` from empty, then day-2 changes, drift, secrets and
destroy, each asserted on what the engine planned (`pulumi preview --json`) and what Docker and HAProxy report.

One stack for the module: `Pulumi.dev.yaml` with only this machine's engine, images, ports and subnet changed
(tests/harness/estates.py), on an isolated dockerd. The tests run in file order, each leaving the estate usable
for the next: converge, no-change, scale, add a stack, relabel, add a worker, remove it under load, an L7 setting,
drift, secrets, destroy.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Engine, free_subnet
from tests.harness.estates import LocalEstate, LocalImages, changed_keys, local_dev
from tests.harness.loadgen import Load, Target
from tests.harness.probe import request
from tests.harness.project import estate_of
from tests.harness.pulumi import Plan, PulumiStack
from tests.harness.wait import wait_until

pytestmark = pytest.mark.slow

DEMO_HOST = "demo.dev.localhost"
HELLO_HOST = "hello.dev.localhost"
SETTLE_S = 180  # bounds for conditions, generous for a loaded 2-core machine; the bench measures
EXTRA_WORKER = "worker3"
# Structural resources that no day-2 change may replace: the nodes and the swarm itself.
NEVER_REPLACED = re.compile(r"-nodes-(manager|worker)\d+$|-swarm-init$|-join$|-nodes-network$")


@dataclass
class Dev(LocalEstate):
    workdir: Path = Path()  # the test's own folder (event logs, a new stack's files)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    engine = Engine.start()
    stack: PulumiStack | None = None
    try:
        images = LocalImages.build(engine)
        estate = local_dev(engine, images, free_subnet())
        workdir = tmp_path_factory.mktemp("engine-dev")
        stack = PulumiStack.create(workdir / "pulumi", "dev", {"swarm-estate:estate": estate})
        yield Dev(engine, images, stack, estate, workdir=workdir)
    finally:
        if stack is not None:
            stack.run("destroy", "--yes", "--skip-preview", check=False)
        engine.stop()


def assert_nothing_structural_replaced(plan: Plan) -> None:
    replaced = [name for name, op in plan.ops().items() if op in ("replace", "delete") and NEVER_REPLACED.search(name)]
    assert not replaced, f"a day-2 change must not replace or delete a node or the swarm: {replaced}"


def answers(entrypoint: str, host: str, count: int) -> list[str]:
    out = []
    for _ in range(count):
        answer = request(entrypoint, host, "/hostname")
        assert answer.status == 200, (answer.status, answer.body[:200])
        out.append(answer.body.strip())
    return out


def all_replicas_answer(dev: Dev, service: str, host: str, replicas: int) -> dict[str, str]:
    """Wait until `replicas` tasks run and every one answers through every L7 entry point."""
    running = wait_until(
        lambda: len(dev.swarm.replicas_by_hostname(service)) == replicas and dev.swarm.replicas_by_hostname(service),
        SETTLE_S,
        f"{replicas} running replicas of {service}",
    )
    def every_replica_answers(entrypoint: str) -> bool:
        got = [request(entrypoint, host, "/hostname") for _ in range(4 * replicas)]
        return all(a.status == 200 for a in got) and {a.body.strip() for a in got} == set(running)

    for entrypoint in dev.outputs()["l7_https_entrypoints"]:
        # an L7 node still rolling onto a new config answers 404 or not at all for a while: not yet
        wait_until(lambda e=entrypoint: every_replica_answers(e), SETTLE_S,
                   f"every replica of {service} answering {host} through {entrypoint}")
    return running


# --- 1. up from empty -------------------------------------------------------------------------------


def test_the_test_config_is_the_dev_stack_with_only_local_settings_changed(dev: Dev) -> None:
    assert changed_keys(estate_of("dev"), dev.estate) == [
        "docker.api_socket_dir", "docker.engine_host", "docker.image", "docker.l7_http_port", "docker.l7_https_port",
        "docker.preload_images", "l7.image", "node_network.subnet",
        "stacks.demo.variables",
    ]


def test_up_from_empty_creates_every_resource_and_converges(dev: Dev) -> None:
    plan = dev.stack.preview()
    assert plan.steps and {s.op for s in plan.steps} == {"create"}
    dev.stack.up()
    spec = dev.spec
    nodes = dev.swarm.nodes()
    assert sorted(nodes) == sorted(n.name for n in spec.nodes)
    for node in spec.nodes:
        got = nodes[node.name]
        assert got["Status"]["State"] == "ready"
        assert (got["Spec"]["Role"], got["Spec"]["Availability"]) == (node.role, node.availability)
        declared = {k: v for k, v in got["Spec"].get("Labels", {}).items() if not k.startswith("swarm-estate.")}
        assert declared == dict(node.labels)
    labelled = sorted(n.name for n in spec.l7_nodes())
    wait_until(lambda: dev.swarm.task_nodes("l7_haproxy") == labelled, SETTLE_S, f"one L7 task on each of {labelled}")


def test_haproxy_public_spans_the_nodes_running_its_tasks(dev: Dev) -> None:
    wait_until(lambda: len(dev.swarm.task_nodes("demo_web")) == 2, SETTLE_S, "two demo replicas")
    on = set(dev.swarm.task_nodes("l7_haproxy")) | set(dev.swarm.task_nodes("demo_web"))
    assert len(on) >= 2
    addresses = {str(n.address) for n in dev.spec.nodes if n.name in on}
    for node in on:
        out = dev.swarm.node_docker(
            node, "network", "inspect", "--format", "{{.Driver}} {{.Scope}} {{range .Peers}}{{.IP}} {{end}}",
            "haproxy-public",
        )
        driver, scope, *peers = out.split()
        assert (driver, scope) == ("overlay", "swarm")
        assert set(peers) == addresses, f"{node} sees peers {peers}, expected {sorted(addresses)}"


def test_each_public_name_is_served_by_replicas_on_other_nodes(dev: Dev) -> None:
    replicas = all_replicas_answer(dev, "demo_web", DEMO_HOST, 2)
    outputs = dev.outputs()
    l7_node = dict(zip(outputs["l7_https_entrypoints"], [n.name for n in dev.spec.l7_nodes()], strict=True))
    for entrypoint, node in l7_node.items():
        page = request(entrypoint, DEMO_HOST, "/")
        assert page.status == 200 and "swarm-estate demo" in page.body  # the stack's own index config
        assert request(entrypoint, DEMO_HOST, "/health").status == 200
        elsewhere = {replicas[h] for h in answers(entrypoint, DEMO_HOST, 8)} - {node}
        assert elsewhere, f"no answer through {entrypoint} came from a node other than {node}"
    for entrypoint in outputs["l7_entrypoints"]:  # plain HTTP is redirected for a public name
        answer = request(entrypoint, DEMO_HOST, "/")
        assert answer.status == 301 and answer.headers["location"] == f"https://{DEMO_HOST}/"


def test_the_cookie_keeps_a_client_on_its_replica(dev: Dev) -> None:
    entrypoint = dev.outputs()["l7_https_entrypoints"][0]
    seen: dict[str, str] = {}
    for _ in range(40):
        answer = request(entrypoint, DEMO_HOST, "/hostname")
        cookie = answer.headers.get("set-cookie", "").split(";")[0]
        assert cookie.startswith("SERVERID="), answer.headers
        seen[answer.body.strip()] = cookie
        if len(seen) == 2:
            break
    assert len(seen) == 2, "both replicas are reached without a cookie"
    for replica, cookie in seen.items():
        assert {request(entrypoint, DEMO_HOST, "/hostname", cookie=cookie).body.strip() for _ in range(10)} == {replica}


def test_an_unknown_host_gets_the_default_answer(dev: Dev) -> None:
    for entrypoint in dev.outputs()["l7_https_entrypoints"]:
        answer = request(entrypoint, "nobody.dev.localhost", "/")
        assert answer.status == 404 and "no service is published under this name" in answer.body


# --- 2. idempotence ---------------------------------------------------------------------------------


def test_right_after_up_nothing_changes(dev: Dev) -> None:
    plan = dev.stack.preview(expect_no_changes=True)
    assert {s.op for s in plan.steps} == {"same"}
    dev.stack.up()
    changes = dev.stack.last_update_changes()
    assert set(changes) == {"same"} and changes["same"] > 40, changes
    # what the providers read back matches what the program says: a refresh leaves nothing to do
    dev.stack.refresh()
    assert set(dev.stack.last_update_changes()) == {"same"}
    dev.stack.preview(expect_no_changes=True)


# --- 3. day-2 changes -------------------------------------------------------------------------------


def test_scaling_a_service_updates_that_service_only(dev: Dev) -> None:
    estate = copy.deepcopy(dev.estate)
    estate["stacks"]["demo"]["services"]["web"]["replicas"] = 3
    dev.configure(estate)
    plan = dev.stack.preview()
    assert plan.ops() == {"dev-stack-demo-web": "update"}
    (step,) = plan.by_name("dev-stack-demo-web")
    assert step.input_changes() == ["mode.replicated.replicas"]
    dev.stack.up()
    all_replicas_answer(dev, "demo_web", DEMO_HOST, 3)


def hello_stack(dev: Dev) -> dict[str, Any]:
    """A second application stack from a compose file of the test's own (absolute path)."""
    folder = dev.workdir / "hello"
    folder.mkdir(exist_ok=True)
    (folder / "docker-compose.yml").write_text(
        "services:\n"
        "  web:\n"
        "    image: ${APP_IMAGE}\n"
        # times in minutes, spelt as people do: the provider reads them back as 1m, 2m, 1m (not a long
        # stop_grace_period: busybox as PID 1 ignores SIGTERM, and the provider's delete waits only so long)
        "    deploy:\n"
        "      replicas: 1\n"
        "      restart_policy: {condition: any, delay: 1m0s, window: 120s}\n"
        "      update_config: {delay: 60s}\n"
    )
    return {
        "compose": str(folder / "docker-compose.yml"),
        "variables": {"APP_IMAGE": dev.images.app_id},
        "services": {"web": {"dns_names": [HELLO_HOST], "http_port": 8080, "sticky": "none"}},
    }


def l7_config_swap(plan: Plan) -> tuple[str, str]:
    """The L7 config of a new content is a new resource and the old one goes: (created, deleted)."""
    ops = plan.ops()
    (created,) = [n for n, op in ops.items() if op == "create" and n.startswith("dev-l7-config-")]
    (deleted,) = [n for n, op in ops.items() if op == "delete" and n.startswith("dev-l7-config-")]
    return created, deleted


def assert_config_swapped_in_order(events: Path, created: str, deleted: str) -> None:
    """The engine made the new config, pointed the L7 service at it, and only then deleted the old one: the
    service never refers to a missing config (swarm would refuse the delete anyway)."""
    order = finished_steps(events)
    assert order.index(("create", created)) < order.index(("update", "dev-l7-service")) < order.index(
        ("delete", deleted)
    ), order


def test_adding_a_route_and_a_stack_creates_it_and_rolls_only_the_l7(dev: Dev) -> None:
    old_config = dev.swarm.service("l7_haproxy")["Spec"]["TaskTemplate"]["ContainerSpec"]["Configs"]
    estate = copy.deepcopy(dev.estate)
    estate["stacks"]["hello"] = hello_stack(dev)
    dev.configure(estate)
    plan = dev.stack.preview()
    created_config, deleted_config = l7_config_swap(plan)
    ops = {n: op for n, op in plan.ops().items() if n not in (created_config, deleted_config)}
    created = {n for n, op in ops.items() if op == "create"}
    assert created and all(n.startswith("dev-stack-hello") for n in created), created
    assert {n: op for n, op in ops.items() if op != "create"} == {"dev-l7-service": "update"}
    assert_nothing_structural_replaced(plan)
    events = dev.workdir / "add-stack-events.jsonl"
    dev.stack.up("--event-log", str(events))
    assert_config_swapped_in_order(events, created_config, deleted_config)
    dev.stack.preview(expect_no_changes=True)  # the new stack's durations read back as they were given
    all_replicas_answer(dev, "hello_web", HELLO_HOST, 1)
    new_config = dev.swarm.service("l7_haproxy")["Spec"]["TaskTemplate"]["ContainerSpec"]["Configs"]
    assert [c["ConfigName"] for c in new_config] != [c["ConfigName"] for c in old_config]
    assert request(dev.outputs()["l7_https_entrypoints"][0], DEMO_HOST, "/hostname").status == 200


def explicit_workers(estate: dict[str, Any]) -> dict[str, Any]:
    """The same workers spelled as a node list, each with the group's labels, so one can be changed."""
    estate = copy.deepcopy(estate)
    workers = estate["swarm"]["workers"]
    labels = workers.pop("labels", [])
    workers["nodes"] = [{"name": f"worker{i + 1}", "labels": list(labels)} for i in range(workers["count"])]
    return estate


def test_spelling_the_workers_out_changes_nothing(dev: Dev) -> None:
    dev.configure(explicit_workers(dev.estate))
    dev.stack.preview(expect_no_changes=True)


def test_relabelling_a_node_updates_only_its_membership(dev: Dev) -> None:
    estate = copy.deepcopy(dev.estate)
    estate["swarm"]["workers"]["nodes"][1]["labels"].append("tier=edge")
    dev.configure(estate)
    plan = dev.stack.preview()
    assert plan.ops() == {"dev-swarm-worker2-membership": "update"}
    dev.stack.up()
    labels = dev.swarm.nodes()["worker2"]["Spec"]["Labels"]
    assert labels.get("tier") == "edge" and labels.get("l7") == "true"


def test_adding_a_worker_creates_its_node_and_joins_it_touching_no_other(dev: Dev) -> None:
    # without the l7 label: the L7 and its published ports stay where they are
    estate = copy.deepcopy(dev.estate)
    workers = estate["swarm"]["workers"]
    workers["nodes"].append({"name": EXTRA_WORKER})
    workers["count"] = len(workers["nodes"])
    dev.configure(estate)
    plan = dev.stack.preview()
    ops = plan.ops()
    assert set(ops.values()) == {"create"}, ops
    assert all(EXTRA_WORKER in name for name in ops), ops
    assert {f"dev-nodes-{EXTRA_WORKER}", f"dev-swarm-{EXTRA_WORKER}-join",
            f"dev-swarm-{EXTRA_WORKER}-registration", f"dev-swarm-{EXTRA_WORKER}-membership"} <= set(ops)
    dev.stack.up()
    node = dev.swarm.nodes()[EXTRA_WORKER]
    assert node["Status"]["State"] == "ready" and node["Spec"]["Role"] == "worker"


def test_removing_a_worker_under_load_drains_it_first_and_fails_no_request(dev: Dev) -> None:
    # put a demo replica on the extra worker, so its removal has a task to move
    others = [n.name for n in dev.spec.nodes if n.name != EXTRA_WORKER]
    for node in others:
        dev.swarm.set_availability(node, "pause")
    try:
        dev.swarm.docker("service", "update", "--detach", "--force", "demo_web")
        wait_until(lambda: EXTRA_WORKER in dev.swarm.task_nodes("demo_web"), SETTLE_S, "a replica on the extra worker")
    finally:
        for node in others:
            dev.swarm.set_availability(node, "active")
    all_replicas_answer(dev, "demo_web", DEMO_HOST, 3)

    estate = copy.deepcopy(dev.estate)
    workers = estate["swarm"]["workers"]
    workers["nodes"] = [n for n in workers["nodes"] if n["name"] != EXTRA_WORKER]
    workers["count"] = len(workers["nodes"])
    dev.configure(estate)
    plan = dev.stack.preview()
    ops = plan.ops()
    assert set(ops.values()) == {"delete"} and all(EXTRA_WORKER in n for n in ops), ops

    entrypoint = dev.outputs()["l7_https_entrypoints"][0]
    stream = Load(Target(entrypoint, DEMO_HOST), rate=20, duration=600).start()
    try:
        events = dev.workdir / "remove-events.jsonl"
        dev.stack.up("--event-log", str(events))
    finally:
        result = stream.stop()
    assert not result.failed, result.failed[:5]
    assert len(result.samples) > 20
    order = [e for e in deleted_in_order(events) if EXTRA_WORKER in e]
    expected = [f"dev-swarm-{EXTRA_WORKER}-membership", f"dev-swarm-{EXTRA_WORKER}-join",
                f"dev-swarm-{EXTRA_WORKER}-registration"]
    assert [n for n in order if n in expected] == expected  # drain, leave, `docker node rm`: the engine's order
    assert order.index(f"dev-swarm-{EXTRA_WORKER}-join") < order.index(f"dev-nodes-{EXTRA_WORKER}")
    assert EXTRA_WORKER not in dev.swarm.nodes()
    assert EXTRA_WORKER not in dev.swarm.task_nodes("demo_web")
    assert len(dev.swarm.running_tasks("demo_web")) == 3


def finished_steps(event_log: Path) -> list[tuple[str, str]]:
    """(op, resource name) of every step in the order the engine finished it (its own event log)."""
    steps = []
    for line in event_log.read_text().splitlines():
        outputs = json.loads(line).get("resOutputsEvent")
        if outputs:
            steps.append((outputs["metadata"]["op"], outputs["metadata"]["urn"].rsplit("::", 1)[-1]))
    return steps


def deleted_in_order(event_log: Path) -> list[str]:
    return [name for op, name in finished_steps(event_log) if op == "delete"]


def test_an_l7_setting_rolls_the_l7_one_node_at_a_time(dev: Dev) -> None:
    estate = copy.deepcopy(dev.estate)
    estate["l7"]["hsts_max_age"] = 3600
    dev.configure(estate)
    plan = dev.stack.preview()
    created_config, deleted_config = l7_config_swap(plan)
    assert plan.ops() == {created_config: "create", deleted_config: "delete", "dev-l7-service": "update"}
    assert_nothing_structural_replaced(plan)
    running: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                running.append(len(dev.swarm.running_tasks("l7_haproxy")))
            except RuntimeError:
                pass
            stop.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    events = dev.workdir / "l7-setting-events.jsonl"
    try:
        dev.stack.up("--event-log", str(events))
        wait_until(
            lambda: (dev.swarm.service("l7_haproxy").get("UpdateStatus") or {}).get("State") == "completed",
            SETTLE_S, "the L7 rolling update to complete",
        )
    finally:
        stop.set()
        watcher.join(10)
    assert_config_swapped_in_order(events, created_config, deleted_config)
    assert running and min(running) >= 1, f"at some moment no L7 task ran: {running}"
    assert min(running) < 2, "the roll replaced L7 tasks (one at a time: one of two was down for a moment)"
    for entrypoint in dev.outputs()["l7_https_entrypoints"]:
        hsts = request(entrypoint, DEMO_HOST, "/").headers.get("strict-transport-security")
        assert hsts == "max-age=3600"


# --- 4. drift -----------------------------------------------------------------------------------------


def test_a_service_scaled_by_hand_is_seen_and_restored(dev: Dev) -> None:
    dev.swarm.scale("demo_web", 1)
    dev.stack.refresh()
    plan = dev.stack.preview()
    assert plan.ops() == {"dev-stack-demo-web": "update"}
    dev.stack.up()
    assert dev.swarm.service("demo_web")["Spec"]["Mode"]["Replicated"]["Replicas"] == 3
    dev.stack.preview(expect_no_changes=True)


def test_a_service_deleted_by_hand_is_seen_and_recreated(dev: Dev) -> None:
    dev.swarm.docker("service", "rm", "hello_web")
    dev.stack.refresh()
    assert dev.stack.preview().ops() == {"dev-stack-hello-web": "create"}
    dev.stack.up()
    all_replicas_answer(dev, "hello_web", HELLO_HOST, 1)
    dev.stack.preview(expect_no_changes=True)


def test_a_node_label_removed_by_hand_is_seen_and_restored(dev: Dev) -> None:
    dev.swarm.docker("node", "update", "--label-rm", "l7", "worker1")
    plan = dev.stack.preview()
    assert plan.ops() == {"dev-swarm-worker1-membership": "update"}
    warnings = [d.get("message", "") for d in plan.diagnostics]
    assert any("node worker1 differs from the estate (label l7=true is missing)" in w for w in warnings), warnings
    dev.stack.up()
    assert dev.swarm.nodes()["worker1"]["Spec"]["Labels"].get("l7") == "true"
    dev.stack.preview(expect_no_changes=True)
    labelled = sorted(n.name for n in dev.spec.l7_nodes())
    wait_until(lambda: dev.swarm.task_nodes("l7_haproxy") == labelled, SETTLE_S, "the L7 back on every labelled node")


# --- 5. secrets -------------------------------------------------------------------------------------


def test_the_state_and_outputs_hold_no_secret_in_clear(dev: Dev) -> None:
    manager = dev.spec.managers[0].name
    tokens = [dev.swarm.docker("swarm", "join-token", "-q", role).strip() for role in ("worker", "manager")]
    task = dev.swarm.node_docker(
        dev.spec.l7_nodes()[0].name, "ps", "-q", "--filter", "label=com.docker.swarm.service.name=l7_haproxy"
    ).split()[0]
    bundle = dev.swarm.node_docker(dev.spec.l7_nodes()[0].name, "exec", task, "sh", "-c",
                                   "cat /usr/local/etc/haproxy/certs/*")
    key_lines = [line for line in bundle.splitlines() if line and not line.startswith("-----")]
    assert tokens and all(tokens) and len(key_lines) > 10, (manager, len(key_lines))
    state = dev.stack.state_file().read_text()
    outputs = json.dumps(dev.stack.outputs(show_secrets=True))
    for text in (state, outputs):
        for token in tokens:
            assert token not in text
        assert not [line for line in key_lines if line in text]
    assert '"ciphertext"' in state  # they are there, encrypted


def test_the_swarm_api_is_a_socket_only_its_user_reaches(dev: Dev) -> None:
    """No engine API on TCP, on loopback or on the node containers' addresses: the first manager's engine is a unix
    socket in a directory only the user running the estate can enter. `pulumi up` went through it."""
    spec = dev.spec
    path = Path(spec.docker.api_socket(spec.name))
    info = path.parent.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, os.getuid())
    env = {**os.environ, "DOCKER_API_VERSION": "1.41"}
    ours = subprocess.run(["docker", "-H", f"unix://{path}", "info", "--format", "{{.Swarm.LocalNodeState}}"],
                          capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert ours.stdout.strip() == "active", ours.stderr
    connect = f"import socket; socket.socket(socket.AF_UNIX).connect({str(path)!r})"
    other = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                            connect], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert other.returncode != 0 and "PermissionError" in other.stderr, other.stderr
    # the node addresses answer (the L7 ports of the L7 nodes), but no engine port does, on any node
    l7 = spec.l7_nodes()[0]
    assert _connects(str(l7.address), spec.l7.http_port)
    for node in spec.nodes:
        for port in (2375, 2376):
            assert not _connects(str(node.address), port), f"{node.name}:{port}"
        published = dev.engine.run("port", dev.container(node.name)).stdout
        assert ":2375" not in published and ":2376" not in published, published


def _connects(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(5)
        return s.connect_ex((address, port)) == 0


# --- 6. destroy ---------------------------------------------------------------------------------------


def test_destroy_leaves_nothing_on_the_engine_and_an_empty_stack(dev: Dev) -> None:
    dev.stack.destroy()
    assert dev.engine.run("ps", "-aq").stdout.split() == []
    assert dev.engine.run("volume", "ls", "-q").stdout.split() == []
    networks = dev.engine.run("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert sorted(networks) == ["host", "none"]  # the isolated engine runs with --bridge=none
    assert dev.stack.resources() == []
