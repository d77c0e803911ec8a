"""The dev estate replayed on real Docker engines: `Pulumi.dev.yaml`, with only this machine's
engine, images and free ports swapped in (tests/replay/dev.py), from nothing to traffic to nothing.

Every registration the program makes is performed for real by tests/replay (containers, networks,
volumes and swarm objects through the Engine API, commands run): the nodes are docker-in-docker
containers on an isolated dockerd, the swarm is formed by the program's own scripts, and the L7
HAProxy and the demo app run as the program's swarm services.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from components.branch import derive_branch_estate
from components.model import load_estate
from components.synth import run_program
from tests.conftest import config_for, estate_of
from tests.harness import Engine, Lab, free_subnet, node_image
from tests.replay import Replay, ReplayError, UnmappedPropertyError, leftovers
from tests.replay.dev import (
    LocalImages,
    branch_template,
    dev_config,
    existing_estate,
    local_images,
    preload_hook,
)
from tests.replay.mapping import Props, container_body, network_body, service_spec, volume_body
from tests.replay.probe import Swarm, request, wait_until

DEMO_HOST = "demo.dev.localhost"
SETTLE_S = 90
# The swarm layer refuses to remove the last manager unless the estate sets
# swarm.dissolve_on_destroy (dev and ci do; an estate without it keeps its swarm on destroy).
LAST_MANAGER_REFUSAL = "refusing to remove the last manager"


@dataclass
class Dev:
    engine: Engine
    images: LocalImages
    estate: dict[str, Any]
    replay: Replay
    swarm: Swarm
    updates: list[Replay] = field(default_factory=list)

    @property
    def spec(self):
        return load_estate(copy.deepcopy(self.estate))

    def container(self, node: str) -> str:
        return f"{self.spec.name}-{node}"


@pytest.fixture(scope="module")
def dev() -> Iterator[Dev]:
    engine = Engine.start()
    replay: Replay | None = None
    try:
        images = local_images(engine, engine.root / "work")
        config = dev_config(engine, images, str(free_subnet()))
        estate = config["swarm-estate:estate"]
        try:
            replay = Replay.run(config, "dev", on_created=preload_hook(engine, images, estate))
        except ReplayError as failed:
            replay = failed.replay
            raise
        swarm_host = f"tcp://127.0.0.1:{estate['docker']['api_port']}"
        dev = Dev(engine, images, estate, replay, Swarm(replay.engine.api(swarm_host), engine))
        yield dev
        for update in dev.updates:  # left behind only when a test failed before the teardown test
            update.teardown(run_command_deletes=False)
    finally:
        if replay is not None and replay.engine.created:
            replay.teardown(run_command_deletes=False)
        engine.stop()


def dev_teardown(dev: Dev) -> list[str]:
    """Newest replay first: an update's new objects, then everything the first replay made."""
    errors = [e for update in reversed(dev.updates) for e in update.teardown()]
    dev.updates.clear()
    return errors + dev.replay.teardown()


# --- without an engine: every property the programs set is mapped ------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod", "ci"])
def test_every_docker_property_the_program_sets_is_mapped(stack: str) -> None:
    result = run_program(config_for(estate_of(stack)), stack=stack)
    mappers = {
        "docker:index/service:Service": service_spec,
        "docker:index/network:Network": network_body,
        "docker:index/volume:Volume": volume_body,
        "docker:index/container:Container": container_body,
    }
    mapped = 0
    for resource in result.resources:
        mapper = mappers.get(resource["type"])
        if mapper is not None:
            mapper(Props(resource["type"], "", resource["inputs"]))
            mapped += 1
    assert mapped >= 3


def test_an_unmapped_property_fails_naming_type_and_property() -> None:
    inputs = {"name": "x", "taskSpec": {"containerSpec": {"image": "i", "privileges": {"noNewPrivileges": True}}}}
    where = r"docker:index/service:Service: .*taskSpec\.containerSpec\.privileges"
    with pytest.raises(UnmappedPropertyError, match=where):
        service_spec(Props("docker:index/service:Service", "", inputs))


def test_service_spec_maps_durations_modes_and_file_refs() -> None:
    spec = service_spec(
        Props(
            "docker:index/service:Service",
            "",
            {
                "name": "s_web",
                "mode": {"global": True},
                "updateConfig": {
                    "delay": "1m30s",
                    "monitor": "500ms",
                    "maxFailureRatio": "0.25",
                    "order": "start-first",
                },
                "taskSpec": {
                    "containerSpec": {
                        "image": "sha256:abc",
                        "env": {"A": "1"},
                        "configs": [{"configId": "c1", "configName": "n", "fileName": "/f"}],
                    },
                    "placement": {"prefs": ["spread=node.labels.zone"]},
                },
            },
        )
    )
    assert spec["Mode"] == {"Global": {}}
    assert spec["UpdateConfig"] == {
        "Delay": 90 * 10**9,
        "Monitor": 500 * 10**6,
        "MaxFailureRatio": 0.25,
        "Order": "start-first",
    }
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Env"] == ["A=1"]
    assert container["Configs"] == [
        {"ConfigID": "c1", "ConfigName": "n", "File": {"Name": "/f", "UID": "0", "GID": "0", "Mode": 0o444}}
    ]
    assert spec["TaskTemplate"]["Placement"] == {"Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}]}


# --- the dev estate, replayed --------------------------------------------------------------------


@pytest.mark.slow
def test_every_node_joined_with_its_labels(dev: Dev) -> None:
    nodes = dev.swarm.nodes()
    spec = dev.spec
    assert sorted(nodes) == sorted(n.name for n in spec.nodes)
    for node in spec.nodes:
        got = nodes[node.name]
        assert got["Status"]["State"] == "ready"
        assert got["Spec"]["Role"] == node.role
        assert got["Spec"]["Availability"] == node.availability
        declared = {k: v for k, v in got["Spec"].get("Labels", {}).items() if k != "swarm-estate.labels"}
        assert declared == dict(node.labels)
    # the join tokens flowed from init's real stdout to the joins: one swarm, the one init made
    init = next(c for c in dev.replay.engine.created if c.name.endswith("-swarm-init"))
    cluster = dev.swarm.api.get("/swarm")["ID"]
    assert f"cluster_id={cluster}" in init.outputs["stdout"]


@pytest.mark.slow
def test_the_l7_haproxy_runs_where_its_label_says(dev: Dev) -> None:
    spec = dev.spec
    labelled = sorted(n.name for n in spec.l7_nodes())
    assert labelled  # the dev estate labels its workers l7=true
    on = wait_until(
        lambda: dev.swarm.task_nodes("l7_haproxy") == labelled and labelled,
        SETTLE_S,
        f"one L7 task on each of {labelled}",
    )
    assert on


@pytest.mark.slow
def test_haproxy_public_spans_the_nodes_running_its_tasks(dev: Dev) -> None:
    wait_until(lambda: len(dev.swarm.task_nodes("demo_web")) == 2, SETTLE_S, "two demo replicas")
    on = set(dev.swarm.task_nodes("l7_haproxy")) | set(dev.swarm.task_nodes("demo_web"))
    assert len(on) >= 2
    for node in on:
        net = dev.swarm.node_docker(
            dev.container(node),
            "network",
            "inspect",
            "--format",
            "{{.Driver}} {{.Scope}} {{range .Peers}}{{.IP}} {{end}}",
            "haproxy-public",
        )
        driver, scope, *peers = net.split()
        assert (driver, scope) == ("overlay", "swarm")
        addresses = {str(n.address) for n in dev.spec.nodes if n.name in on}
        assert set(peers) == addresses, f"{node} sees peers {peers}, expected {sorted(addresses)}"


def _answers(dev: Dev, entrypoint: str, count: int) -> list[str]:
    out = []
    for _ in range(count):
        answer = request(entrypoint, DEMO_HOST, "/hostname")
        assert answer.status == 200, (answer.status, answer.body[:200])
        out.append(answer.body.strip())
    return out


@pytest.mark.slow
def test_each_public_name_reaches_its_app_answered_by_replicas_on_other_nodes(dev: Dev) -> None:
    entrypoints = dev.replay.outputs["l7_https_entrypoints"]
    assert len(entrypoints) == len(dev.spec.l7_nodes())
    l7_node = {e: n.name for e, n in zip(entrypoints, dev.spec.l7_nodes(), strict=True)}
    replicas = wait_until(
        lambda: len(dev.swarm.replicas_by_hostname("demo_web")) == 2 and dev.swarm.replicas_by_hostname("demo_web"),
        SETTLE_S,
        "two running demo replicas",
    )
    for entrypoint in entrypoints:
        # every running replica answers through this entry point (HAProxy found both through DNS)
        wait_until(
            lambda e=entrypoint: set(_answers(dev, e, 8)) == set(replicas),
            SETTLE_S,
            f"both replicas answering through {entrypoint}",
        )
        page = request(entrypoint, DEMO_HOST, "/")
        assert page.status == 200 and "swarm-estate demo" in page.body  # the stack's own index config
        assert request(entrypoint, DEMO_HOST, "/health").status == 200
        elsewhere = {replicas[h] for h in set(_answers(dev, entrypoint, 8))} - {l7_node[entrypoint]}
        assert elsewhere, f"no answer through {entrypoint} came from a node other than {l7_node[entrypoint]}"
    # plain HTTP is redirected to HTTPS for a public name
    for entrypoint in dev.replay.outputs["l7_entrypoints"]:
        answer = request(entrypoint, DEMO_HOST, "/")
        assert answer.status == 301 and answer.headers["location"] == f"https://{DEMO_HOST}/"


@pytest.mark.slow
def test_the_cookie_keeps_a_client_on_its_replica(dev: Dev) -> None:
    entrypoint = dev.replay.outputs["l7_https_entrypoints"][0]
    seen = {}
    for _ in range(20):
        answer = request(entrypoint, DEMO_HOST, "/hostname")
        cookie = answer.headers.get("set-cookie", "").split(";")[0]
        assert cookie.startswith("SERVERID="), answer.headers
        seen[answer.body.strip()] = cookie
        if len(seen) == 2:
            break
    assert len(seen) == 2, "both replicas should be reached without a cookie"
    for replica, cookie in seen.items():
        assert set(_sticky(entrypoint, cookie, 10)) == {replica}


def _sticky(entrypoint: str, cookie: str, count: int) -> list[str]:
    return [request(entrypoint, DEMO_HOST, "/hostname", cookie=cookie).body.strip() for _ in range(count)]


@pytest.mark.slow
def test_an_unknown_host_gets_the_default_answer(dev: Dev) -> None:
    for entrypoint in dev.replay.outputs["l7_https_entrypoints"]:
        answer = request(entrypoint, "nobody.dev.localhost", "/")
        assert answer.status == 404
        assert "no service is published under this name" in answer.body


@pytest.mark.slow
def test_a_second_config_is_applied_as_service_updates(dev: Dev) -> None:
    estate = copy.deepcopy(dev.estate)
    estate["stacks"]["demo"]["services"]["web"]["replicas"] = 3
    old_config = next(c for c in dev.replay.engine.created if c.name.endswith("-l7-config")).inputs["name"]
    update = dev.replay.update(config_for(estate), "dev")
    dev.updates.append(update)
    assert sorted(update.engine.updated) == ["dev-l7-service", "dev-stack-demo-web"]
    made = {
        c.name
        for c in update.engine.created
        if c.name not in update.engine.reused and not c.typ.startswith("pulumi:providers:")
    }
    assert made == {"dev-l7-config", "dev-l7-service", "dev-stack-demo-web"}  # the rest was left as it was
    replicas = wait_until(
        lambda: len(dev.swarm.replicas_by_hostname("demo_web")) == 3 and dev.swarm.replicas_by_hostname("demo_web"),
        SETTLE_S,
        "three demo replicas",
    )
    l7 = dev.swarm.api.get("/services/l7_haproxy")["Spec"]["TaskTemplate"]["ContainerSpec"]["Configs"]
    assert [c["ConfigName"] for c in l7] != [old_config]  # the rolled L7 runs the re-rendered config
    for entrypoint in dev.replay.outputs["l7_https_entrypoints"]:
        wait_until(
            lambda e=entrypoint: set(_answers(dev, e, 12)) == set(replicas),
            SETTLE_S,
            f"all three replicas answering through {entrypoint}",
        )


@pytest.mark.slow
def test_teardown_removes_everything_the_replay_made(dev: Dev) -> None:
    api = dev.replay.engine.api(dev.engine.host)
    before = leftovers(api)
    assert len(before["containers"]) == len(dev.spec.nodes)
    errors = dev_teardown(dev)
    # dev sets swarm.dissolve_on_destroy: the other nodes are drained, leave and are removed first,
    # then the first manager's own deletes end the swarm; nothing is refused, nothing kept.
    assert errors == []
    assert not [n for n in dev.replay.engine.kept if "-swarm-" in n]
    assert leftovers(api) == {"containers": [], "volumes": [], "networks": []}


# --- the same estate on existing hosts, over SSH -------------------------------------------------


def _bootstrap(typ: str, name: str) -> bool:
    """The hosts layer's bootstrap converges packages and systemd units; the harness nodes run no
    systemd (tini starts sshd and dockerd) and have no network to install nftables/chrony from."""
    return typ == "command:remote:Command" and name.endswith("-bootstrap")


@pytest.mark.slow
def test_an_existing_substrate_estate_converges_over_ssh() -> None:
    engine = Engine.start()
    replay: Replay | None = None
    try:
        images = local_images(engine, engine.root / "work")
        subnet = free_subnet()
        lab = Lab(engine, node_image(engine), subnet, engine.root / "lab")
        first = subnet.network_address
        names = {"manager1": str(first + 10), "worker1": str(first + 20), "worker2": str(first + 21)}
        lab.add_nodes(list(names.items()))
        for node in lab.nodes.values():
            with images.tarball.open("rb") as data:
                subprocess.run(
                    ["ssh", *lab.ssh_options(), f"root@{node.address}", "docker load -q"],
                    stdin=data,
                    check=True,
                    capture_output=True,
                    timeout=180,
                )
        estate = existing_estate(estate_of("dev"), images, str(subnet), names)
        config = config_for(estate, {"swarm-estate:sshPrivateKey": lab.key.read_text()})
        try:
            replay = Replay.run(config, "existing", ssh_options=lab.ssh_options(), skip=_bootstrap)
        except ReplayError as failed:
            replay = failed.replay
            raise
        assert sorted(replay.engine.skipped) == sorted(f"existing-hosts-{n}-bootstrap" for n in names)
        swarm_commands = [c for c in replay.engine.created if c.typ.startswith("command:") and "-swarm-" in c.name]
        assert len(swarm_commands) == 1 + 3 * len(names)  # init, then registration/join/membership per node
        assert all(c.typ == "command:remote:Command" for c in swarm_commands)  # the prod path, over SSH

        swarm = Swarm(replay.engine.api(f"ssh://root@{names['manager1']}:22"), engine)
        nodes = swarm.nodes()
        assert sorted(nodes) == sorted(names)
        assert all(nodes[w]["Spec"]["Labels"].get("l7") == "true" for w in ("worker1", "worker2"))
        assert swarm.task_nodes("l7_haproxy") == ["worker1", "worker2"]  # the service converged before returning
        replicas = wait_until(
            lambda: len(swarm.replicas_by_hostname("demo_web")) == 2 and swarm.replicas_by_hostname("demo_web"),
            SETTLE_S,
            "two demo replicas",
        )
        for worker in ("worker1", "worker2"):
            entry = f"https://{names[worker]}:443"  # host-mode port of the L7 task on that node
            wait_until(
                lambda e=entry: (
                    {request(e, DEMO_HOST, "/hostname", own=subnet).body.strip() for _ in range(8)} == set(replicas)
                ),
                SETTLE_S,
                f"both replicas via {entry}",
            )

        errors = replay.teardown()
        assert len(errors) == 1 and "-swarm-manager1-membership" in errors[0] and LAST_MANAGER_REFUSAL in errors[0]
        for worker in ("worker1", "worker2"):  # the graceful removal ran for real: drained, left, removed
            state = lab.nodes[worker].docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
            assert state == "inactive", worker
        manager = lab.nodes["manager1"]
        assert manager.docker("node", "ls", "--format", "{{.Hostname}}").stdout.split() == ["manager1"]
        for kind in ("service", "config", "secret"):
            assert manager.docker(kind, "ls", "-q").stdout.split() == [], kind
        networks = manager.docker("network", "ls", "--filter", "driver=overlay", "--format", "{{.Name}}").stdout
        assert networks.split() == ["ingress"]
    finally:
        if replay is not None and replay.engine.created:
            replay.teardown(run_command_deletes=False)
        engine.stop()


# --- two branch stacks side by side on one engine (issue 9) --------------------------------------


@pytest.mark.slow
def test_two_branch_stacks_run_side_by_side_and_both_are_destroyed_cleanly() -> None:
    engine = Engine.start()
    replays: dict[str, Replay] = {}
    try:
        images = local_images(engine, engine.root / "work")
        raw = branch_template(engine, images)
        branches = ("feature-login", "fix-cache")
        for stack in branches:
            derived = derive_branch_estate(raw, stack)
            try:
                replays[stack] = Replay.run(config_for(raw), stack, on_created=preload_hook(engine, images, derived))
            except ReplayError as failed:
                replays[stack] = failed.replay
                raise
        entry = {s: r.outputs["l7_https_entrypoints"] for s, r in replays.items()}
        name = {s: r.outputs["public_urls"][0].split("/")[2] for s, r in replays.items()}
        assert not set(entry[branches[0]]) & set(entry[branches[1]])
        assert name[branches[0]] != name[branches[1]]
        api = replays[branches[0]].engine.api(engine.host)
        assert len(leftovers(api)["containers"]) == 4  # 1 manager + 1 worker per branch, on one engine

        for stack, replay in replays.items():
            derived = load_estate(derive_branch_estate(raw, stack))
            swarm = Swarm(replay.engine.api(f"tcp://127.0.0.1:{derived.docker.api_port}"), engine)
            assert sorted(swarm.nodes()) == sorted(n.name for n in derived.nodes)
            replicas = wait_until(
                lambda s=swarm: len(s.replicas_by_hostname("demo_web")) == 2 and s.replicas_by_hostname("demo_web"),
                SETTLE_S,
                f"{stack}: two replicas",
            )
            (https,) = entry[stack]
            wait_until(
                lambda e=https, n=name[stack], want=set(replicas): (
                    {request(e, n, "/hostname").body.strip() for _ in range(8)} == want
                ),
                SETTLE_S,
                f"{stack}: its own replicas through {https}",
            )
            other = next(n for s, n in name.items() if s != stack)
            assert request(https, other, "/").status == 404  # the other branch's name is not served here

        for stack in reversed(branches):
            errors = replays[stack].teardown()
            assert errors == []  # the ci template dissolves its swarm on destroy
        assert leftovers(api) == {"containers": [], "volumes": [], "networks": []}
    finally:
        for replay in replays.values():
            if replay.engine.created:
                replay.teardown(run_command_deletes=False)
        engine.stop()
