"""The swarm layer's own host scripts against a real 3-manager + 2-worker swarm.

Nodes are docker-in-docker containers on an isolated engine (tests/harness); every script runs
over real SSH with exactly the command line the Cluster component sends (`script_command`), and
its environment comes from the same model-driven helpers the component uses.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from components.model import EstateConfigError, EstateSpec, Node, load_estate
from components.swarm import in_container, init_env, join_env, node_env, parse_kv, removal_env, script_command
from tests.harness import Engine, Lab, free_subnet
from tests.harness.lab import Node as LabNode
from tests.harness.wait import wait_until
from tools.images import busybox_image, node_image

pytestmark = pytest.mark.slow

BUSYBOX = "swarm-estate-busybox:1"
SETTLE_TIMEOUT_S = 90


def estate_for(subnet: str) -> EstateSpec:
    return load_estate(
        {
            "name": "realswarm",
            "domain": "realswarm.localhost",
            "substrate": "docker",
            "node_network": {"name": "lab", "subnet": subnet},
            "swarm": {
                "managers": {"count": 3, "name_prefix": "m"},
                "workers": {"count": 2, "name_prefix": "w", "labels": ["l7=true"]},
                "owned_label_prefixes": ["function"],
            },
            "l7": {"replicas": 2},
        }
    )


@dataclass
class Swarm:
    spec: EstateSpec
    lab: Lab
    outsider: LabNode  # a node outside the estate, for the bad-state tests
    node_ids: dict[str, str]
    # Services name the image by id: with a tag, every task first tries a registry pull, which only
    # times out on an offline machine.
    image: str = ""
    cluster_id: str = ""

    def node(self, name: str) -> LabNode:
        return self.lab.nodes[name]

    def model(self, name: str) -> Node:
        return next(n for n in self.spec.nodes if n.name == name)

    @property
    def first(self) -> LabNode:
        return self.node(self.spec.managers[0].name)

    def run(
        self, where: LabNode, script: str, env: dict[str, str], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return where.ssh(script_command(script, env), check=check, timeout=240)

    def init(self) -> dict[str, str]:
        out = parse_kv(self.run(self.first, "swarm-init.sh", init_env(self.spec, self.spec.managers[0])).stdout)
        self.cluster_id = out["cluster_id"]
        return out

    def join(self, name: str, tokens: dict[str, str]) -> subprocess.CompletedProcess[str]:
        node = self.model(name)
        token = tokens["manager_token"] if node.role == "manager" else tokens["worker_token"]
        env = {**join_env(self.spec, node, self.spec.managers[0]), "JOIN_TOKEN": token, "CLUSTER_ID": self.cluster_id}
        return self.run(self.node(name), "swarm-join.sh", env)

    def join_registered(self, name: str, tokens: dict[str, str]) -> str:
        """The registration step (a manager check), then the join; returns the node id."""
        self.run(self.first, "swarm-manager-check.sh", {})
        return parse_kv(self.join(name, tokens).stdout)["node_id"]

    def converge(self, name: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        env = {**node_env(self.spec, self.model(name)), "NODE": self.node_ids[name], **overrides}
        return self.run(self.first, "swarm-node.sh", env)

    def nodes_state(self) -> dict[str, dict]:
        ids = self.first.docker("node", "ls", "-q").stdout.split()
        state = {}
        for n in json.loads(self.first.docker("node", "inspect", *ids).stdout):
            state[n["Description"]["Hostname"]] = {
                "id": n["ID"],
                "role": n["Spec"]["Role"],
                "availability": n["Spec"]["Availability"],
                "labels": n["Spec"].get("Labels") or {},
                "status": n["Status"]["State"],
                "manager": (n.get("ManagerStatus") or {}).get("Reachability"),
            }
        return state

    def service(self, name: str, *flags: str) -> None:
        """A dnsrr service of sleeping busybox tasks: no VIP (this kernel has no IPVS)."""
        self.first.docker(
            "service",
            "create",
            "-d",
            "--no-resolve-image",
            "--name",
            name,
            "--endpoint-mode",
            "dnsrr",
            *flags,
            self.image,
            "sleep",
            "86400",
        )

    def task_nodes(self, service: str) -> list[str]:
        lines = self.first.docker(
            "service", "ps", "--filter", "desired-state=running", "--format", "{{.Node}} {{.CurrentState}}", service
        ).stdout.splitlines()
        return sorted(line.split()[0] for line in lines if line.split()[1:2] == ["Running"])


@pytest.fixture(scope="module")
def swarm() -> Iterator[Swarm]:
    engine = Engine.start()
    try:
        subnet = free_subnet()
        spec = estate_for(str(subnet))
        lab = Lab(engine, node_image(engine), subnet, engine.root / "lab")
        lab.add_nodes([(n.name, str(n.address)) for n in spec.nodes] + [("x1", str(subnet.network_address + 30))])
        lab.load_image(busybox_image(engine, BUSYBOX))
        image_id = engine.run("image", "inspect", "--format", "{{.Id}}", BUSYBOX).stdout.strip()
        s = Swarm(spec=spec, lab=lab, outsider=lab.nodes["x1"], node_ids={}, image=image_id)
        tokens = s.init()
        # Pulumi runs the joins of all nodes at once (each depends only on init): so do we.
        with ThreadPoolExecutor(max_workers=len(spec.nodes)) as pool:
            joined = pool.map(lambda n: (n.name, s.join_registered(n.name, tokens)), spec.nodes)
            s.node_ids.update(dict(joined))
            list(pool.map(lambda n: s.converge(n.name), spec.nodes))
        yield s
    finally:
        engine.stop()


def test_init_and_joins_build_the_modelled_swarm(swarm: Swarm) -> None:
    state = swarm.nodes_state()
    assert sorted(state) == ["m1", "m2", "m3", "w1", "w2"]
    assert {n: s["role"] for n, s in state.items()} == {
        "m1": "manager",
        "m2": "manager",
        "m3": "manager",
        "w1": "worker",
        "w2": "worker",
    }
    assert all(s["status"] == "ready" for s in state.values())
    assert all(state[m]["manager"] == "reachable" for m in ("m1", "m2", "m3"))
    assert state["w1"]["labels"]["l7"] == "true" and state["w2"]["labels"]["l7"] == "true"
    assert "l7" not in state["m1"]["labels"]
    assert {n: s["id"] for n, s in state.items()} == swarm.node_ids
    # The advertise address is the node's model address, so managers reach each other on it.
    addr = swarm.first.docker("node", "inspect", "--format", "{{.ManagerStatus.Addr}}", "m2").stdout.strip()
    assert addr == f"{swarm.model('m2').address}:2377"


def test_every_script_rerun_three_times_changes_nothing(swarm: Swarm) -> None:
    before = swarm.nodes_state()
    for _ in range(3):
        tokens = swarm.init()
        assert tokens["cluster_id"] == swarm.cluster_id
        assert parse_kv(swarm.run(swarm.first, "swarm-manager-check.sh", {}).stdout)["manager"] == swarm.node_ids["m1"]
        for node in swarm.spec.nodes:
            joined = swarm.join(node.name, tokens)
            assert "nothing to do" in joined.stderr
            assert parse_kv(joined.stdout)["node_id"] == swarm.node_ids[node.name]
        for node in swarm.spec.nodes:
            converged = swarm.converge(node.name)
            assert "changed" not in converged.stderr, converged.stderr
        assert swarm.nodes_state() == before


def test_the_docker_exec_form_for_dind_nodes_runs_the_same_scripts(swarm: Swarm) -> None:
    """What the component's local commands run for docker-in-docker nodes, against the same swarm."""
    first = swarm.spec.managers[0]
    env = {**node_env(swarm.spec, swarm.model("w1")), "NODE": swarm.node_ids["w1"]}
    line = in_container(swarm.node(first.name).container, script_command("swarm-node.sh", env))
    result = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=120, env=swarm.lab.engine.env())
    assert result.returncode == 0, result.stderr
    assert parse_kv(result.stdout)["node"] == swarm.node_ids["w1"]
    assert "label l7=true" in result.stdout.splitlines()
    assert "changed" not in result.stderr


def test_labels_are_added_and_removed_and_foreign_labels_stay(swarm: Swarm) -> None:
    first = swarm.first
    # Someone sets labels by hand: one under a prefix the estate owns, one it knows nothing about.
    first.docker("node", "update", "--label-add", "function=adhoc", "--label-add", "team=ops", "w1")
    swarm.converge("w1", LABELS="l7=true zone=a")
    labels = swarm.nodes_state()["w1"]["labels"]
    assert labels.get("zone") == "a" and labels.get("l7") == "true"
    assert "function" not in labels  # owned prefix, not declared: removed
    assert labels.get("team") == "ops"  # not the estate's: left alone
    # zone leaves the model: the estate set it, so it goes; team still stays.
    swarm.converge("w1", LABELS="l7=true")
    labels = swarm.nodes_state()["w1"]["labels"]
    assert "zone" not in labels and labels.get("team") == "ops" and labels.get("l7") == "true"
    first.docker("node", "update", "--label-rm", "team", "w1")


def test_label_constrained_dnsrr_service_lands_where_the_labels_say(swarm: Swarm) -> None:
    first = swarm.first
    swarm.service("l7probe", "--replicas", "2", "--replicas-max-per-node", "1", "--constraint", "node.labels.l7==true")
    wait_until(lambda: swarm.task_nodes("l7probe") == ["w1", "w2"], SETTLE_TIMEOUT_S, "l7probe on w1 and w2", every=1)
    # Move the label from w2 to m2 in the model: the task follows the label.
    swarm.converge("w2", LABELS="")
    swarm.converge("m2", LABELS="l7=true")
    wait_until(lambda: swarm.task_nodes("l7probe") == ["m2", "w1"], SETTLE_TIMEOUT_S, "l7probe on m2 and w1", every=1)
    swarm.converge("m2")
    swarm.converge("w2")
    wait_until(
        lambda: swarm.task_nodes("l7probe") == ["w1", "w2"], SETTLE_TIMEOUT_S, "l7probe back on w1 and w2", every=1
    )
    first.docker("service", "rm", "l7probe")


def test_availability_and_role_follow_the_model(swarm: Swarm) -> None:
    swarm.converge("w1", AVAILABILITY="pause")
    assert swarm.nodes_state()["w1"]["availability"] == "pause"
    swarm.converge("w1", ROLE="manager")
    assert swarm.nodes_state()["w1"]["role"] == "manager"
    swarm.converge("w1")
    state = swarm.nodes_state()["w1"]
    assert (state["role"], state["availability"]) == ("worker", "active")


def test_swarm_still_schedules_with_one_manager_of_three_stopped(swarm: Swarm) -> None:
    m3 = swarm.node("m3")
    m3.stop()
    try:
        wait_until(
            lambda: swarm.nodes_state()["m3"]["manager"] == "unreachable", SETTLE_TIMEOUT_S, "m3 unreachable", every=1
        )
        swarm.service("quorum", "--replicas", "3")
        wait_until(lambda: len(swarm.task_nodes("quorum")) == 3, SETTLE_TIMEOUT_S, "3 quorum tasks", every=1)
        assert "m3" not in swarm.task_nodes("quorum")
    finally:
        m3.start()
    wait_until(
        lambda: swarm.nodes_state()["m3"]["manager"] == "reachable", SETTLE_TIMEOUT_S, "m3 reachable again", every=1
    )
    swarm.first.docker("service", "rm", "quorum")


def test_drain_gives_a_clear_bounded_failure_when_tasks_cannot_move(swarm: Swarm) -> None:
    first = swarm.first
    swarm.service("pinned", "--constraint", "node.hostname==w1")
    wait_until(lambda: swarm.task_nodes("pinned") == ["w1"], SETTLE_TIMEOUT_S, "pinned on w1", every=1)
    started = time.monotonic()
    result = swarm.run(
        first,
        "swarm-node-drain.sh",
        {**node_env(swarm.spec, swarm.model("w1")), "NODE": swarm.node_ids["w1"], "DRAIN_TIMEOUT": "5"},
        check=False,
    )
    assert result.returncode != 0
    assert "have not moved after 5s" in result.stderr and "pinned" in result.stderr
    assert time.monotonic() - started < 60
    first.docker("service", "rm", "pinned")
    swarm.converge("w1")  # the model says active: converging undoes the drain
    assert swarm.nodes_state()["w1"]["availability"] == "active"


def remove(swarm: Swarm, name: str) -> None:
    """The three delete steps in the order Pulumi runs them, each three times."""
    node = swarm.model(name)
    drain_env = {**node_env(swarm.spec, node), "NODE": swarm.node_ids[name]}
    for _ in range(3):
        swarm.run(swarm.first, "swarm-node-drain.sh", drain_env)
    for _ in range(3):
        swarm.run(swarm.node(name), "swarm-leave.sh", {})
    for _ in range(3):
        swarm.run(swarm.first, "swarm-node-rm.sh", removal_env(swarm.spec, node))


def test_removing_a_worker_moves_its_tasks_then_drops_it(swarm: Swarm) -> None:
    first = swarm.first
    swarm.service("spread", "--replicas", "2", "--constraint", "node.role==worker")
    wait_until(lambda: swarm.task_nodes("spread") == ["w1", "w2"], SETTLE_TIMEOUT_S, "spread on w1 and w2", every=1)
    remove(swarm, "w2")
    assert swarm.task_nodes("spread") == ["w1", "w1"]
    assert "w2" not in swarm.nodes_state()
    info = swarm.node("w2").docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    assert info == "inactive"
    first.docker("service", "rm", "spread")


def test_demoting_a_manager_while_another_is_down_is_refused(swarm: Swarm) -> None:
    m2 = swarm.node("m2")
    m2.stop()
    try:
        wait_until(
            lambda: swarm.nodes_state()["m2"]["manager"] == "unreachable", SETTLE_TIMEOUT_S, "m2 unreachable", every=1
        )
        env = {**node_env(swarm.spec, swarm.model("m3")), "NODE": swarm.node_ids["m3"]}
        result = swarm.run(swarm.first, "swarm-node-drain.sh", env, check=False)
        assert result.returncode != 0
        assert "refusing to demote: 1 of the 2 remaining managers are reachable" in result.stderr
        state = swarm.nodes_state()["m3"]
        assert (state["role"], state["availability"]) == ("manager", "active")  # refused before touching it
    finally:
        m2.start()
    wait_until(
        lambda: swarm.nodes_state()["m2"]["manager"] == "reachable", SETTLE_TIMEOUT_S, "m2 reachable again", every=1
    )


def test_removing_a_manager_keeps_quorum(swarm: Swarm) -> None:
    remove(swarm, "m3")
    state = swarm.nodes_state()
    assert "m3" not in state
    assert sorted(n for n, s in state.items() if s["role"] == "manager") == ["m1", "m2"]
    assert all(state[m]["manager"] == "reachable" for m in ("m1", "m2"))
    swarm.service("after", "--replicas", "2")
    wait_until(lambda: len(swarm.task_nodes("after")) == 2, SETTLE_TIMEOUT_S, "tasks after removing a manager", every=1)
    swarm.first.docker("service", "rm", "after")


def test_joining_a_node_of_another_swarm_is_a_clear_error(swarm: Swarm) -> None:
    outsider = swarm.outsider
    outsider.docker("swarm", "init", "--advertise-addr", str(outsider.address))
    tokens = parse_kv(swarm.run(swarm.first, "swarm-init.sh", init_env(swarm.spec, swarm.spec.managers[0])).stdout)
    env = {
        **join_env(swarm.spec, swarm.model("w1"), swarm.spec.managers[0]),
        "ADVERTISE_ADDR": str(outsider.address),
        "JOIN_TOKEN": tokens["worker_token"],
        "CLUSTER_ID": swarm.cluster_id,
    }
    result = swarm.run(outsider, "swarm-join.sh", env, check=False)
    assert result.returncode != 0
    assert "already belongs to another swarm" in result.stderr
    assert str(swarm.spec.managers[0].address) in result.stderr  # names the swarm it should have joined
    # A worker cannot initialise the estate's swarm either.
    worker = swarm.run(swarm.node("w1"), "swarm-init.sh", init_env(swarm.spec, swarm.model("w1")), check=False)
    assert worker.returncode != 0 and "is a worker of a swarm" in worker.stderr


def test_removing_the_last_manager_is_refused(swarm: Swarm) -> None:
    outsider = swarm.outsider  # the sole manager of its own one-node swarm (previous test)
    if outsider.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() != "active":
        outsider.docker("swarm", "init", "--advertise-addr", str(outsider.address))
    own_id = outsider.docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
    result = swarm.run(outsider, "swarm-node-drain.sh", {"NODE": own_id}, check=False)
    assert result.returncode != 0
    assert "refusing to remove the last manager" in result.stderr
    # Nothing was touched: it was refused before draining.
    assert outsider.docker("node", "inspect", "--format", "{{.Spec.Availability}}", own_id).stdout.strip() == "active"
    leave = swarm.run(outsider, "swarm-leave.sh", {}, check=False)
    assert leave.returncode != 0 and "still a manager" in leave.stderr
    demote = swarm.run(
        outsider, "swarm-node.sh", {"NODE": own_id, "ROLE": "worker", "AVAILABILITY": "active"}, check=False
    )
    assert demote.returncode != 0 and "refusing to demote the last manager" in demote.stderr


def test_a_destroyed_estate_dissolves_the_swarm_on_its_last_manager(swarm: Swarm) -> None:
    """swarm.dissolve_on_destroy: the same three deletes, on the last manager, end the swarm cleanly."""
    outsider = swarm.outsider
    if outsider.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() != "active":
        outsider.docker("swarm", "init", "--advertise-addr", str(outsider.address))
    own_id = outsider.docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
    dissolve = {"DISSOLVE": "true"}
    drain = swarm.run(outsider, "swarm-node-drain.sh", {"NODE": own_id, **dissolve})
    assert "the swarm is dissolved when it leaves" in drain.stderr
    for _ in range(2):  # idempotent: the second leave finds no swarm
        swarm.run(outsider, "swarm-leave.sh", dissolve)
    assert outsider.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() == "inactive"
    rm = swarm.run(outsider, "swarm-node-rm.sh", {"NODE_ADDR": str(outsider.address), "NODE_NAME": "x", **dissolve})
    assert "the swarm is dissolved" in rm.stderr


def test_an_even_manager_count_is_rejected_by_the_model() -> None:
    with pytest.raises(EstateConfigError) as err:
        load_estate(
            {
                "name": "even",
                "domain": "even.localhost",
                "substrate": "docker",
                "node_network": {"subnet": "172.31.250.0/24"},
                "swarm": {"managers": 2},
                "l7": {"replicas": 1},
                "docker": {},
                "public_network": {"name": "haproxy-public"},
            }
        )
    assert "swarm-estate:estate.swarm.managers: 2 managers cannot tolerate any failure; use 1, 3, 5 or 7" in str(
        err.value
    )


def test_the_harness_engine_leaves_nothing_behind_when_a_test_fails() -> None:
    engine = Engine.start()
    root, pid = engine.root, engine.process.pid if engine.process else 0
    with pytest.raises(RuntimeError, match="a failing test"):
        try:
            engine.run("volume", "create", "leftover")
            engine.run("network", "create", "leftover")
            raise RuntimeError("a failing test")
        finally:
            engine.stop()
    assert not root.exists()
    assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0  # the engine is gone
    assert str(root) not in open("/proc/self/mountinfo").read()
