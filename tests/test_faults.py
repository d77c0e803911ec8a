"""Faults and rollouts on the replayed dev estate, under a bounded loopback load (issue 8).

One estate is replayed for the whole module (3 managers + 2 l7-labelled workers, L7 HAProxy on
both workers, the demo stack's `web` with 2 replicas) and the scenarios run on it in an order in
which each leaves it usable for the next: replica loss, app rolling update, L7 config change,
manager loss, scale-out (a third, unlabelled worker), worker removal (that worker again).

Every scenario is a function returning its figures, so `tests/bench/bench_faults.py` prints the
same measurements the tests assert. HAProxy's view of a backend is read from its Prometheus page
on the stats frontend of each L7 task, polled on both L7 nodes at once.
"""

from __future__ import annotations

import copy
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from components.l7config import pickup_bound_ms
from components.model import EstateSpec, duration_ms, load_estate
from tests.conftest import config_for, estate_of
from tests.harness import Engine, free_subnet
from tests.loadgen import Load, LoadResult, Target, get
from tests.replay import Created, Replay, ReplayError
from tests.replay.dev import LocalImages, dev_config, local_images, preload_hook
from tests.replay.images import image_id
from tests.replay.probe import Swarm, wait_until

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


@dataclass
class Estate:
    engine: Engine
    images: LocalImages
    estate: dict[str, Any]  # the config now applied (local overrides included)
    replays: list[Replay]
    swarm: Swarm
    extra_images: list[bytes] = field(default_factory=list)  # `docker save` output loaded into every node

    @property
    def replay(self) -> Replay:
        return self.replays[-1]

    @property
    def spec(self) -> EstateSpec:
        return load_estate(copy.deepcopy(self.estate))

    def container(self, node: str) -> str:
        return f"{self.spec.name}-{node}"

    @property
    def entrypoints(self) -> list[str]:
        return list(self.replay.outputs["l7_https_entrypoints"])

    @property
    def l7_containers(self) -> list[str]:
        return [self.container(n.name) for n in self.spec.l7_nodes()]

    def update(self, estate: dict[str, Any]) -> Replay:
        """Replay `estate` over the current one (`pulumi up` of a changed config)."""
        known = {r.name for r in self.replay.engine.created}
        preload = preload_hook(self.engine, self.images, estate)

        def new_nodes_only(record: Created) -> None:
            # a reused node's readiness is registered again: its images are already there
            if record.name in known:
                return
            preload(record)
            if record.name.endswith("-ready"):
                for tarball in self.extra_images:
                    self.load_image(record.name.removesuffix("-ready").replace("-nodes-", "-", 1), tarball)

        try:
            replay = self.replay.update(config_for(estate), "dev", on_created=new_nodes_only)
        except ReplayError as failed:
            self.replays.append(failed.replay)
            raise
        self.replays.append(replay)
        self.estate = estate
        return replay

    def set_availability(self, node: str, availability: str) -> None:
        current = self.swarm.api.get(f"/nodes/{node}")
        spec = {**current["Spec"], "Availability": availability}
        self.swarm.api.post(f"/nodes/{current['ID']}/update", spec, version=current["Version"]["Index"])

    def load_image(self, container: str, tarball: bytes) -> None:
        subprocess.run(
            ["docker", "exec", "-i", container, "docker", "load", "-q"],
            input=tarball,
            capture_output=True,
            env=self.engine.env(),
            timeout=120,
            check=True,
        )

    def service(self, name: str) -> dict[str, Any]:
        return self.swarm.api.get(f"/services/{name}")

    def scale(self, service: str, replicas: int) -> None:
        current = self.service(service)
        spec = current["Spec"]
        spec["Mode"]["Replicated"]["Replicas"] = replicas
        self.swarm.api.post(f"/services/{current['ID']}/update", spec, version=current["Version"]["Index"])


def build_estate() -> Estate:
    engine = Engine.start()
    replays: list[Replay] = []
    try:
        images = local_images(engine, engine.root / "work")
        config = dev_config(engine, images, str(free_subnet()), base_estate())
        estate = config["swarm-estate:estate"]
        try:
            replays.append(Replay.run(config, "dev", on_created=preload_hook(engine, images, estate)))
        except ReplayError as failed:
            replays.append(failed.replay)
            raise
        swarm = Swarm(replays[0].engine.api(f"tcp://127.0.0.1:{estate['docker']['api_port']}"), engine)
        built = Estate(engine, images, estate, replays, swarm)
        wait_for(lambda: len(swarm.running_tasks(SERVICE)) == 2, SETTLE_S, "two demo replicas")
        Rotation(built).wait(lambda c: all(v == 2 for v in c.values()), SETTLE_S, "both replicas UP on both L7s")
        return built
    except BaseException:
        destroy(engine, replays)
        raise


def destroy(engine: Engine, replays: list[Replay]) -> None:
    try:
        for replay in reversed(replays):
            replay.teardown(run_command_deletes=False)
    finally:
        engine.stop()


# --- looking at it ---------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    # an engine briefly not answering is retried until the bound, whatever it raises
    return wait_until(predicate, timeout, what, every, retry_on=(Exception,))


def task_time(task: dict[str, Any]) -> float:
    """The swarm's timestamp of a task's current state, as a wall-clock epoch."""
    stamp = task["Status"]["Timestamp"].rstrip("Z")
    whole, _, frac = stamp.partition(".")
    return datetime.fromisoformat(f"{whole}.{(frac + '000000')[:6]}+00:00").timestamp()


class Rotation:
    """How many servers of a backend each L7 HAProxy has UP, read from its Prometheus page."""

    def __init__(self, estate: Estate, backend: str = SERVICE):
        self.estate, self.backend = estate, backend
        self._tasks: dict[str, str] = {}

    def _metrics(self, node: str) -> str:
        for _ in range(2):
            task = (
                self._tasks.get(node)
                or self.estate.swarm.node_docker(
                    node, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={L7_SERVICE}"
                ).split()[0]
            )
            try:
                out = self.estate.swarm.node_docker(
                    node, "exec", task, "wget", "-q", "-O", "-", "http://127.0.0.1:8404/metrics", timeout=10
                )
                self._tasks[node] = task
                return out
            except RuntimeError:
                self._tasks.pop(node, None)  # the L7 task was replaced: look it up again
        raise RuntimeError(f"no metrics from the L7 task on {node}")

    def up(self) -> dict[str, int]:
        nodes = self.estate.l7_containers
        marker = f'haproxy_server_status{{proxy="{self.backend}",'
        with ThreadPoolExecutor(len(nodes)) as pool:
            pages = dict(zip(nodes, pool.map(self._metrics, nodes), strict=True))
        return {
            n: sum(1 for line in page.splitlines() if line.startswith(marker) and 'state="UP"} 1' in line)
            for n, page in pages.items()
        }

    def wait(self, predicate: Callable[[dict[str, int]], bool], timeout: float, what: str) -> float:
        """Wall-clock time at which `predicate(up counts)` was first seen true."""

        def seen() -> float | None:
            counts = self.up()
            return time.time() if predicate(counts) else None

        return wait_for(seen, timeout, what, every=0.05)


def running_ids(estate: Estate, service: str) -> dict[str, dict[str, Any]]:
    return {t["ID"]: t for t in estate.swarm.running_tasks(service)}


def wait_rolled(estate: Estate, service: str, timeout: float) -> float:
    """Until the service's last update completed; returns when that was seen (wall clock)."""

    def done() -> float | None:
        status = estate.service(service).get("UpdateStatus") or {}
        if status.get("State") in ("paused", "rollback_completed", "rollback_paused"):
            raise AssertionError(f"update of {service} failed: {status}")
        return time.time() if status.get("State") == "completed" else None

    return wait_for(done, timeout, f"the update of {service} to complete", every=0.5)


def load(
    estate: Estate, entrypoint: int = 0, duration: float = 120, fallback: bool = False, rate: float = RATE
) -> Load:
    eps = estate.entrypoints
    other = eps[(entrypoint + 1) % len(eps)] if fallback else None
    return Load(Target(eps[entrypoint], DEMO_HOST, fallback=other), rate, duration).start()


# --- the scenarios (each returns its figures) ------------------------------------------------------


def replica_loss(estate: Estate) -> dict[str, Any]:
    """Kill one demo replica's container inside its node, mid-load."""
    rotation = Rotation(estate)
    replicas = len(estate.swarm.running_tasks(SERVICE))
    stream = load(estate)
    time.sleep(2)
    before = running_ids(estate, SERVICE)
    victim = next(iter(before.values()))
    node = estate.swarm.node_names()[victim["NodeID"]]
    killed = time.time()
    estate.swarm.node_docker(estate.container(node), "kill", victim["Status"]["ContainerStatus"]["ContainerID"])
    out_at = rotation.wait(lambda c: all(v < replicas for v in c.values()), 30, "the dead replica out of rotation")
    new = wait_for(
        lambda: [t for i, t in running_ids(estate, SERVICE).items() if i not in before],
        60,
        "the swarm's replacement running",
    )[0]
    in_at = rotation.wait(lambda c: all(v == replicas for v in c.values()), 30, "the replacement in rotation")
    time.sleep(2)
    result = stream.stop()
    return {
        "failed requests": len(result.failed),
        "requests": len(result.samples),
        "time out of rotation s": out_at - killed,
        "time back in after running s": in_at - task_time(new),
        "_result": result,
    }


def second_app_image(estate: Estate) -> str:
    """A second demo image (the same app, another ID), loaded into every node as the first was."""
    ref = "swarm-estate-test/app:v2"
    dockerfile = f"FROM {estate.images.app}\nLABEL swarm-estate.test.version=2\n"
    estate.engine.run("build", "-q", "-t", ref, "-", input=dockerfile, timeout=120, env={"DOCKER_BUILDKIT": "0"})
    new = image_id(estate.engine, ref)
    save = subprocess.run(
        ["docker", "save", new], capture_output=True, env=estate.engine.env(), timeout=120, check=True
    )
    estate.extra_images.append(save.stdout)  # nodes added later get it too
    for node in estate.spec.nodes:
        estate.load_image(estate.container(node.name), save.stdout)
    return new


def rolling_update(estate: Estate) -> dict[str, Any]:
    """A new image tag for the demo service (start-first, parallelism 1), applied under load."""
    new_image = second_app_image(estate)
    changed = copy.deepcopy(estate.estate)
    changed["stacks"]["demo"]["variables"]["DEMO_IMAGE"] = new_image
    stream = load(estate)
    time.sleep(2)
    started = time.time()
    estate.update(changed)
    update = estate.service(SERVICE)["Spec"]["UpdateConfig"]
    done = wait_rolled(estate, SERVICE, ROLL_S)
    time.sleep(2)
    result = stream.stop()
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
    plain = [load(estate, i, duration=ROLL_S + 60, rate=RATE / 4) for i in range(eps)]
    retrying = [load(estate, i, duration=ROLL_S + 60, fallback=True, rate=RATE / 4) for i in range(eps)]
    time.sleep(2)
    started = time.time()
    estate.update(changed)
    done = wait_rolled(estate, L7_SERVICE, ROLL_S)
    for ep in estate.entrypoints:
        wait_for(lambda ep=ep: get(ep, NEW_HOST, "/hostname")[0] == 200, 30, f"{NEW_HOST} answering on {ep}")
    time.sleep(2)
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
    stream = load(estate)
    time.sleep(2)
    estate.engine.run("stop", "-t", "10", estate.container(victim), timeout=60)
    wait_for(lambda: estate.swarm.nodes()[victim]["Status"]["State"] == "down", 60, f"{victim} seen down")
    replicas = estate.service(SERVICE)["Spec"]["Mode"]["Replicated"]["Replicas"]
    estate.scale(SERVICE, replicas + 1)
    try:
        wait_for(lambda: len(estate.swarm.running_tasks(SERVICE)) == replicas + 1, 90, "the scale-up running")
        scheduled = True
    except AssertionError:
        scheduled = False
    started = time.time()
    estate.engine.run("start", estate.container(victim), timeout=60)

    def rejoined() -> bool:
        node = estate.swarm.nodes()[victim]
        return node["Status"]["State"] == "ready" and node.get("ManagerStatus", {}).get("Reachability") == "reachable"

    wait_for(rejoined, 120, f"{victim} ready and reachable again")
    back = time.time()
    time.sleep(2)
    result = stream.stop()
    return {
        "failed requests": len(result.failed),
        "requests": len(result.samples),
        "scale-up scheduled": scheduled,
        "rejoin s": back - started,
        "_result": result,
    }


def scale_out(estate: Estate) -> dict[str, Any]:
    """Add a worker (a config change replayed) and raise the demo service's replicas by one."""
    estate.update(with_extra_worker(estate.estate))
    wait_for(
        lambda: estate.swarm.nodes().get(EXTRA_WORKER, {}).get("Status", {}).get("State") == "ready",
        60,
        f"{EXTRA_WORKER} ready",
    )
    rotation = Rotation(estate)
    before = running_ids(estate, SERVICE)
    replicas = len(before)
    rotation.wait(lambda c: all(v == replicas for v in c.values()), 30, "every replica in rotation first")
    # Onto the new capacity: the other nodes are paused while the service scales (running tasks
    # stay), so the new replica lands on the new worker and its removal later has a task to move.
    others = [n for n in estate.spec.nodes if n.name != EXTRA_WORKER]
    try:
        for node in others:
            estate.set_availability(node.name, "pause")
        estate.scale(SERVICE, replicas + 1)
        new = wait_for(
            lambda: [t for i, t in running_ids(estate, SERVICE).items() if i not in before],
            60,
            "the new replica running",
        )[0]
    finally:
        for node in others:
            estate.set_availability(node.name, node.availability)
    in_at = rotation.wait(lambda c: all(v == replicas + 1 for v in c.values()), 30, "the new replica in rotation")
    return {
        "time to rotation after running s": in_at - task_time(new),
        "new replica on": estate.swarm.node_names()[new["NodeID"]],
    }


def worker_removal(estate: Estate) -> dict[str, Any]:
    """Remove the extra worker from the config and run what a `pulumi up` deletes for it, newest
    first: the membership's delete (drain, wait for its tasks to move), the join's (leave), the
    registration's (`docker node rm`), then its container and volume."""
    stream = load(estate)
    time.sleep(2)
    adding = estate.replay
    before_tasks = estate.swarm.task_nodes(SERVICE)
    shrunk = copy.deepcopy(estate.estate)
    workers = shrunk["swarm"]["workers"]
    workers["count"] -= 1
    workers["nodes"] = [n for n in workers["nodes"] if n["name"] != EXTRA_WORKER]
    estate.update(shrunk)
    spec = estate.spec
    gone = [
        r
        for r in reversed(adding.engine.created)
        if r.name.startswith((f"{spec.name}-swarm-{EXTRA_WORKER}-", f"{spec.name}-nodes-{EXTRA_WORKER}"))
    ]
    assert gone and not [r for r in estate.replay.engine.created if EXTRA_WORKER in r.name]
    started = time.time()
    for record in gone:
        adding.engine.delete(record)  # what `pulumi up` does to a resource the config dropped
    removed = time.time()
    time.sleep(2)
    result = stream.stop()
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
def estate() -> Iterator[Estate]:
    built = build_estate()
    try:
        yield built
    finally:
        destroy(built.engine, built.replays)


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


@pytest.mark.slow
def test_replica_loss_fails_no_request_and_the_replacement_enters_within_the_dns_bound(estate: Estate) -> None:
    figures = replica_loss(estate)
    _show("replica loss", figures)
    spec = estate.spec
    assert figures["failed requests"] == 0, figures["_result"].failed[:5]
    assert figures["time out of rotation s"] <= 3 * duration_ms(spec.l7.check.inter) / 1000
    assert figures["time back in after running s"] <= pickup_bound_ms(spec) / 1000


@pytest.mark.slow
def test_app_rolling_update_start_first_fails_no_request(estate: Estate) -> None:
    figures = rolling_update(estate)
    _show("app rolling update", figures)
    assert (figures["order"], figures["parallelism"]) == ("start-first", 1)
    assert figures["images after"] == {figures["new image"]}
    assert figures["failed requests"] == 0, figures["_result"].failed[:5]


@pytest.mark.slow
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


@pytest.mark.slow
def test_manager_loss_keeps_requests_and_scheduling_and_the_manager_rejoins(estate: Estate) -> None:
    figures = manager_loss(estate)
    _show("manager loss", figures)
    assert figures["failed requests"] == 0, figures["_result"].failed[:5]
    assert figures["scale-up scheduled"]


@pytest.mark.slow
def test_scale_out_new_replica_is_in_rotation_within_the_goal(estate: Estate) -> None:
    figures = scale_out(estate)
    _show("scale-out", figures)
    assert EXTRA_WORKER in estate.swarm.nodes()
    assert figures["new replica on"] == EXTRA_WORKER
    assert figures["time to rotation after running s"] <= SCALE_OUT_GOAL_S


@pytest.mark.slow
def test_worker_removal_drains_it_without_a_failed_request(estate: Estate) -> None:
    figures = worker_removal(estate)
    _show("worker removal", figures)
    assert figures["failed requests"] == 0, figures["_result"].failed[:5]
    assert EXTRA_WORKER not in figures["nodes after"]
    assert EXTRA_WORKER in figures["tasks before on"]  # the scale-out put a replica there
    assert EXTRA_WORKER not in figures["tasks after on"]
    assert len(figures["tasks after on"]) == figures["replicas"]
    api = estate.replay.engine.api(estate.engine.host)
    assert estate.container(EXTRA_WORKER) not in [
        c["Names"][0].lstrip("/") for c in api.get("/containers/json", all="1")
    ]
