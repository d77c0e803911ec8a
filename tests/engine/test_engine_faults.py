"""Faults and rollouts on the dev estate under the real Pulumi engine, under a bounded loopback load.

One estate for the module, brought up by `pulumi up` (3 managers + 2 l7-labelled workers, L7 HAProxy on both
workers, the demo stack's `web` with 2 replicas), and the scenarios run on it in an order in which each leaves it
usable for the next: replica loss, app rolling update, L7 config change, manager loss, scale-out (a third,
unlabelled worker), worker removal (that worker again). Every change of the estate is a new stack config and a
`pulumi up`; what the engine deletes and in which order is the engine's business.

Every scenario is a function returning its figures, so `tests/bench/bench_engine_faults.py` prints the same
measurements the tests assert. HAProxy's view of a backend is read from its Prometheus page on the stats frontend
of each L7 task, polled on both L7 nodes at once.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from components.render.l7 import pickup_bound_ms
from components.units import duration_ms
from tests.harness import Engine, free_subnet
from tests.harness.estates import LocalEstate, LocalImages, local_dev
from tests.harness.loadgen import Load, LoadResult, Target, get
from tests.harness.probe import Rotation, task_time
from tests.harness.project import estate_of
from tests.harness.pulumi import PulumiStack
from tests.harness.wait import wait_until
from tools.images import image_id

pytestmark = pytest.mark.slow

DEMO_HOST = "demo.dev.localhost"
NEW_HOST = "demo2.dev.localhost"  # the route the L7 config change adds
SERVICE, L7_SERVICE = "demo_web", "l7_haproxy"
RATE = 25  # req/s per stream: modest, the machine runs five engines on two cores
SCALE_OUT_GOAL_S = 5.0
SETTLE_S = 120
ROLL_S = 180
EXTRA_WORKER = "worker3"


# --- the estate ----------------------------------------------------------------------------------


def base_estate() -> dict[str, Any]:
    estate = estate_of("dev")
    estate["swarm"]["managers"] = 3
    return estate


def with_extra_worker(estate: dict[str, Any]) -> dict[str, Any]:
    """A third worker without the l7 label: the first two resolve exactly as before (same
    labels, same addresses), so the L7 and its published ports do not move."""
    estate = copy.deepcopy(estate)
    workers = estate["swarm"]["workers"]
    labels = workers.pop("labels", [])
    workers["nodes"] = [{"name": f"worker{i + 1}", "labels": labels} for i in range(workers["count"])]
    workers["count"] += 1
    return estate


class Estate(LocalEstate):
    def update(self, estate: dict[str, Any]) -> None:
        """`pulumi up` of a changed config."""
        self.configure(estate)
        self.stack.up()

    def rotation(self, backend: str = SERVICE) -> Rotation:
        return super().rotation(backend)


def build_estate(workdir: Path) -> Estate:
    engine = Engine.start()
    stack: PulumiStack | None = None
    try:
        images = LocalImages.build(engine)
        estate = local_dev(engine, images, free_subnet(), base_estate())
        stack = PulumiStack.create(workdir, "dev", {"swarm-estate:estate": estate})
        stack.up()
        built = Estate(engine, images, stack, estate)
        wait_until(
            lambda: len(built.swarm.running_tasks(SERVICE)) == 2,
            SETTLE_S,
            "two demo replicas",
            every=0.2,
            retry_on=(Exception,),
        )
        built.rotation().wait(lambda c: all(v == 2 for v in c.values()), SETTLE_S, "both replicas UP on both L7s")
        return built
    except BaseException:
        destroy(engine, stack)
        raise


def destroy(engine: Engine, stack: PulumiStack | None) -> None:
    try:
        if stack is not None:
            stack.run("destroy", "--yes", "--skip-preview", check=False)
    finally:
        engine.stop()


# --- looking at it ---------------------------------------------------------------------------------


def running_ids(estate: Estate, service: str) -> dict[str, dict[str, Any]]:
    return {t["ID"]: t for t in estate.swarm.running_tasks(service)}


def wait_rolled(estate: Estate, service: str, timeout: float) -> float:
    """Until the service's last update completed; returns when that was seen (wall clock)."""

    def done() -> float | None:
        status = estate.service(service).get("UpdateStatus") or {}
        if status.get("State") in ("paused", "rollback_completed", "rollback_paused"):
            raise AssertionError(f"update of {service} failed: {status}")
        return time.time() if status.get("State") == "completed" else None

    return wait_until(done, timeout, f"the update of {service} to complete", every=0.5)


def load(
    estate: Estate, entrypoint: int = 0, duration: float = 300, fallback: bool = False, rate: float = RATE
) -> Load:
    eps = estate.entrypoints
    other = eps[(entrypoint + 1) % len(eps)] if fallback else None
    return Load(Target(eps[entrypoint], DEMO_HOST, fallback=other), rate, duration).start()


def warmed_up(stream: Load, answers: int = 10) -> Load:
    """The stream once it has had `answers` more answers: the load runs before anything is broken."""
    start = stream.answered()
    wait_until(lambda: stream.answered() >= start + answers, 60, f"{answers} answers on {stream.target.entrypoint}")
    return stream


def cooled_down(stream: Load) -> LoadResult:
    """Stop the stream after a few more answers: the load outlasts what was broken, then ends."""
    return warmed_up(stream).stop()


# --- the scenarios (each returns its figures) ------------------------------------------------------


def replica_loss(estate: Estate) -> dict[str, Any]:
    """Kill one demo replica's container inside its node, mid-load."""
    rotation = estate.rotation()
    replicas = len(estate.swarm.running_tasks(SERVICE))
    stream = warmed_up(load(estate))
    before = running_ids(estate, SERVICE)
    victim = next(iter(before.values()))
    node = estate.swarm.node_names()[victim["NodeID"]]
    killed = time.time()
    estate.swarm.node_docker(node, "kill", victim["Status"]["ContainerStatus"]["ContainerID"])
    out_at = rotation.wait(lambda c: all(v < replicas for v in c.values()), 30, "the dead replica out of rotation")
    new = wait_until(
        lambda: [t for i, t in running_ids(estate, SERVICE).items() if i not in before],
        60,
        "the swarm's replacement running",
        every=0.2,
        retry_on=(Exception,),
    )[0]
    in_at = rotation.wait(lambda c: all(v == replicas for v in c.values()), 30, "the replacement in rotation")
    result = cooled_down(stream)
    return {
        "failed requests": len(result.failed),
        "requests": len(result.samples),
        "time out of rotation s": out_at - killed,
        "time back in after running s": in_at - task_time(new),
        "_result": result,
    }


def second_app_image(estate: Estate) -> tuple[str, str]:
    """A second demo image (the same app, another ID) in the outer engine: (tag, ID)."""
    ref = "swarm-estate-test/app:v2"
    dockerfile = f"FROM {estate.images.app}\nLABEL swarm-estate.test.version=2\n"
    estate.engine.run("build", "-q", "-t", ref, "-", input=dockerfile, timeout=120, env={"DOCKER_BUILDKIT": "0"})
    return ref, image_id(estate.engine, ref)


def rolling_update(estate: Estate) -> dict[str, Any]:
    """A new image for the demo service (start-first, parallelism 1), applied under load; the program loads it
    into every node first (docker.preload_images), as it does for a node it adds."""
    ref, new_image = second_app_image(estate)
    changed = copy.deepcopy(estate.estate)
    changed["docker"]["preload_images"] = [*changed["docker"]["preload_images"], ref]
    changed["stacks"]["demo"]["variables"]["DEMO_IMAGE"] = new_image
    stream = warmed_up(load(estate))
    started = time.time()
    estate.update(changed)
    update = estate.service(SERVICE)["Spec"]["UpdateConfig"]
    done = wait_rolled(estate, SERVICE, ROLL_S)
    result = cooled_down(stream)
    images = {t["Spec"]["ContainerSpec"]["Image"] for t in estate.swarm.running_tasks(SERVICE)}
    return {
        "failed requests": len(result.failed),
        "requests": len(result.samples),
        "rollout s": done - started,
        "order": update.get("Order"),
        "parallelism": update.get("Parallelism"),
        "images after": images,
        "new image": new_image,
        "_result": result,
    }


def l7_config_change(estate: Estate) -> dict[str, Any]:
    """A new DNS name on the demo route: the L7 config hash changes and the L7 service rolls."""
    changed = copy.deepcopy(estate.estate)
    changed["stacks"]["demo"]["services"]["web"]["dns_names"].append(NEW_HOST)
    old_config = {
        c["ConfigName"] for c in estate.service(L7_SERVICE)["Spec"]["TaskTemplate"]["ContainerSpec"].get("Configs", [])
    }
    eps = len(estate.entrypoints)
    # one stream per node without retry (its window alone), one per node with the client retry;
    # together they send RATE: a TLS handshake per request, and the machine also runs five engines
    plain = [load(estate, i, rate=RATE / 4) for i in range(eps)]
    retrying = [warmed_up(load(estate, i, fallback=True, rate=RATE / 4)) for i in range(eps)]
    started = time.time()
    estate.update(changed)
    done = wait_rolled(estate, L7_SERVICE, ROLL_S)
    for ep in estate.entrypoints:
        wait_until(
            lambda ep=ep: get(ep, NEW_HOST, "/hostname")[0] == 200,
            30,
            f"{NEW_HOST} answering on {ep}",
            every=0.2,
            retry_on=(Exception,),
        )
    for stream in plain + retrying:
        warmed_up(stream)  # a few more answers after the roll, on every stream
    for stream in plain + retrying:
        stream.halt()
    plain_results = [s.wait() for s in plain]
    retry_results = [s.wait() for s in retrying]
    new_config = {
        c["ConfigName"] for c in estate.service(L7_SERVICE)["Spec"]["TaskTemplate"]["ContainerSpec"].get("Configs", [])
    }
    return {
        "config changed": old_config != new_config,
        "rollout s": done - started,
        "unavailable s per node": [r.window() for r in plain_results],
        "failed without retry": sum(len(r.failed) for r in plain_results),
        "failed with retry": sum(len(r.failed) for r in retry_results),
        "answered by the other L7 on retry": sum(len(r.answered_by_fallback()) for r in retry_results),
        "requests": sum(len(r.samples) for r in plain_results + retry_results),
        "_results": plain_results + retry_results,
    }


def manager_loss(estate: Estate) -> dict[str, Any]:
    """Stop one of three managers' node containers; scale up meanwhile; start it again."""
    victim = estate.spec.managers[-1].name  # not the first: the program's swarm endpoint lives there
    stream = warmed_up(load(estate))
    estate.engine.run("stop", "-t", "10", estate.container(victim), timeout=60)
    wait_until(
        lambda: estate.swarm.nodes()[victim]["Status"]["State"] == "down",
        60,
        f"{victim} seen down",
        every=0.2,
        retry_on=(Exception,),
    )
    replicas = estate.service(SERVICE)["Spec"]["Mode"]["Replicated"]["Replicas"]
    estate.swarm.scale(SERVICE, replicas + 1)
    try:
        wait_until(
            lambda: len(estate.swarm.running_tasks(SERVICE)) == replicas + 1,
            90,
            "the scale-up running",
            every=0.2,
            retry_on=(Exception,),
        )
        scheduled = True
    except AssertionError:
        scheduled = False
    started = time.time()
    estate.engine.run("start", estate.container(victim), timeout=60)

    def rejoined() -> bool:
        node = estate.swarm.nodes()[victim]
        return node["Status"]["State"] == "ready" and node.get("ManagerStatus", {}).get("Reachability") == "reachable"

    wait_until(rejoined, 120, f"{victim} ready and reachable again", every=0.2, retry_on=(Exception,))
    back = time.time()
    result = cooled_down(stream)
    return {
        "failed requests": len(result.failed),
        "requests": len(result.samples),
        "scale-up scheduled": scheduled,
        "rejoin s": back - started,
        "_result": result,
    }


def scale_out(estate: Estate) -> dict[str, Any]:
    """Add a worker (a config change and `pulumi up`) and raise the demo service's replicas by one."""
    estate.update(with_extra_worker(estate.estate))
    wait_until(
        lambda: estate.swarm.nodes().get(EXTRA_WORKER, {}).get("Status", {}).get("State") == "ready",
        60,
        f"{EXTRA_WORKER} ready",
        every=0.2,
        retry_on=(Exception,),
    )
    rotation = estate.rotation()
    before = running_ids(estate, SERVICE)
    replicas = len(before)
    rotation.wait(lambda c: all(v == replicas for v in c.values()), 30, "every replica in rotation first")
    # Onto the new capacity: the other nodes are paused while the service scales (running tasks
    # stay), so the new replica lands on the new worker and its removal later has a task to move.
    others = [n for n in estate.spec.nodes if n.name != EXTRA_WORKER]
    try:
        for node in others:
            estate.swarm.set_availability(node.name, "pause")
        estate.swarm.scale(SERVICE, replicas + 1)
        new = wait_until(
            lambda: [t for i, t in running_ids(estate, SERVICE).items() if i not in before],
            60,
            "the new replica running",
            every=0.2,
            retry_on=(Exception,),
        )[0]
    finally:
        for node in others:
            estate.swarm.set_availability(node.name, node.availability)
    in_at = rotation.wait(lambda c: all(v == replicas + 1 for v in c.values()), 30, "the new replica in rotation")
    return {
        "time to rotation after running s": in_at - task_time(new),
        "new replica on": estate.swarm.node_names()[new["NodeID"]],
    }


def worker_removal(estate: Estate) -> dict[str, Any]:
    """Remove the extra worker from the config and `pulumi up` under load: the engine deletes its resources in
    its own order (drain, leave, `docker node rm`, then its container and volume)."""
    stream = warmed_up(load(estate))
    before_tasks = estate.swarm.task_nodes(SERVICE)
    shrunk = copy.deepcopy(estate.estate)
    workers = shrunk["swarm"]["workers"]
    workers["count"] -= 1
    workers["nodes"] = [n for n in workers["nodes"] if n["name"] != EXTRA_WORKER]
    started = time.time()
    estate.update(shrunk)
    removed = time.time()
    result = cooled_down(stream)
    return {
        "failed requests": len(result.failed),
        "requests": len(result.samples),
        "removal s": removed - started,
        "tasks before on": before_tasks,
        "tasks after on": estate.swarm.task_nodes(SERVICE),
        "replicas": estate.service(SERVICE)["Spec"]["Mode"]["Replicated"]["Replicas"],
        "nodes after": sorted(estate.swarm.nodes()),
        "_result": result,
    }


SCENARIOS: list[tuple[str, Callable[[Estate], dict[str, Any]]]] = [
    ("replica loss", replica_loss),
    ("app rolling update", rolling_update),
    ("L7 config change", l7_config_change),
    ("manager loss", manager_loss),
    ("scale-out", scale_out),
    ("worker removal", worker_removal),
]


# --- the tests -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    built = build_estate(tmp_path_factory.mktemp("engine-faults"))
    try:
        yield built
    finally:
        destroy(built.engine, built.stack)


def _show(name: str, figures: dict[str, Any]) -> None:
    print(f"\n{name}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in figures.items() if not k.startswith("_")))
    for result in [figures.get("_result"), *figures.get("_results", [])]:
        if isinstance(result, LoadResult):
            print(f"  {result.target.entrypoint}: {result.summary()}")
            for sample in result.failed[:3]:
                print(f"    failed at {sample.sent:.2f}: {sample.status} {sample.error}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def test_replica_loss_fails_no_request_and_the_replacement_enters_within_the_dns_bound(estate: Estate) -> None:
    figures = replica_loss(estate)
    _show("replica loss", figures)
    spec = estate.spec
    assert figures["failed requests"] == 0, figures["_result"].failed[:5]
    # how fast (printed above; tests/bench/bench_engine_faults.py measures it) against what the config promises
    print(f"documented: out within {3 * duration_ms(spec.l7.check.inter)} ms, back within {pickup_bound_ms(spec)} ms")


def test_app_rolling_update_start_first_fails_no_request(estate: Estate) -> None:
    figures = rolling_update(estate)
    _show("app rolling update", figures)
    assert (figures["order"], figures["parallelism"]) == ("start-first", 1)
    assert figures["images after"] == {figures["new image"]}
    assert figures["failed requests"] == 0, figures["_result"].failed[:5]


def test_l7_config_change_rolls_one_node_at_a_time_and_a_client_retry_to_the_other_l7_never_fails(
    estate: Estate,
) -> None:
    figures = l7_config_change(estate)
    _show("L7 config change", figures)
    assert figures["config changed"]
    windows = figures["unavailable s per node"]
    # stop-first, one node at a time: each node's entry point goes away for a while (no L4 in
    # front of dev), but never both at once, so a client that retries on the other one never fails
    assert all(w > 0 for w in windows), windows
    assert figures["failed with retry"] == 0
    assert figures["answered by the other L7 on retry"] > 0
    plain = figures["_results"][: len(windows)]
    down = [(min(s.sent for s in r.first_failures()), max(s.sent for s in r.first_failures())) for r in plain]
    for (a_start, a_end), (b_start, b_end) in zip(down, down[1:], strict=False):
        assert a_end < b_start or b_end < a_start, f"both L7 nodes were down at once: {down}"


def test_manager_loss_keeps_requests_and_scheduling_and_the_manager_rejoins(estate: Estate) -> None:
    figures = manager_loss(estate)
    _show("manager loss", figures)
    assert figures["failed requests"] == 0, figures["_result"].failed[:5]
    assert figures["scale-up scheduled"]


def test_scale_out_new_replica_is_in_rotation_within_the_goal(estate: Estate) -> None:
    figures = scale_out(estate)
    _show("scale-out", figures)
    assert EXTRA_WORKER in estate.swarm.nodes()
    assert figures["new replica on"] == EXTRA_WORKER
    assert figures["time to rotation after running s"] <= SCALE_OUT_GOAL_S


def test_worker_removal_drains_it_without_a_failed_request(estate: Estate) -> None:
    figures = worker_removal(estate)
    _show("worker removal", figures)
    assert figures["failed requests"] == 0, figures["_result"].failed[:5]
    assert EXTRA_WORKER not in figures["nodes after"]
    assert EXTRA_WORKER in figures["tasks before on"]  # the scale-out put a replica there
    assert EXTRA_WORKER not in figures["tasks after on"]
    assert len(figures["tasks after on"]) == figures["replicas"]
    names = estate.engine.run("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert estate.container(EXTRA_WORKER) not in names
