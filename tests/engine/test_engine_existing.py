"""The `existing` substrate under the real Pulumi engine: hosts that already run (systemd "existing hosts" of the
lab, reached over real SSH as an ops user with sudo), bootstrapped and joined into a swarm by remote commands,
the swarm's objects made through the `ssh://` docker provider, the L7 answering on the workers' own addresses.

The machine that runs Pulumi reaches the first manager the way the README says an operator's does: the key in
its SSH configuration (the docker provider and the drift check use `ssh`), the same key as a Pulumi secret for
the remote commands.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

import pytest

from components.render.cloudinit import READY_MARKER
from tests.harness import Engine, Lab, free_subnet
from tests.harness.estates import LocalImages
from tests.harness.hosts import OPS_USER, host_image, operator_ssh
from tests.harness.probe import Swarm, request
from tests.harness.project import estate_of
from tests.harness.pulumi import PulumiStack
from tests.harness.wait import wait_until

pytestmark = pytest.mark.slow

DEMO_HOST = "demo.dev.localhost"
SETTLE_S = 180
LAST_MANAGER_REFUSAL = "refusing to remove the last manager"


def existing_estate(subnet: IPv4Network, nodes: dict[str, str], images: LocalImages) -> dict[str, Any]:
    """The dev estate's swarm, L7 and stacks on existing hosts (`nodes`: name -> address, the first one the
    manager, the others L7-labelled workers), as an operator writes it for machines that run Docker already."""
    dev = estate_of("dev")
    (manager, manager_addr), *workers = nodes.items()
    estate = {
        "name": "existing",
        "domain": dev["domain"],
        "substrate": "existing",
        "node_network": {"name": "lab", "subnet": str(subnet)},
        "ssh": {"user": OPS_USER, "private_key_secret": "sshPrivateKey"},
        "engine": {"install": "preinstalled"},
        "swarm": {
            "managers": {"count": 1, "nodes": [{"name": manager, "address": manager_addr}]},
            "workers": {"count": len(workers), "labels": ["l7=true"],
                        "nodes": [{"name": n, "address": a} for n, a in workers]},
        },
        "public_network": copy.deepcopy(dev["public_network"]),
        "l7": {**copy.deepcopy(dev["l7"]), "image": images.haproxy_id},
        "stacks": copy.deepcopy(dev["stacks"]),
    }
    for stack in estate["stacks"].values():
        stack.setdefault("variables", {})["DEMO_IMAGE"] = images.app_id
    return estate


@dataclass
class Existing:
    lab: Lab
    stack: PulumiStack
    nodes: dict[str, str]
    swarm: Swarm


@pytest.fixture(scope="module")
def existing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Existing]:
    engine = Engine.start()
    work = tmp_path_factory.mktemp("engine-existing")
    stack: PulumiStack | None = None
    try:
        images = LocalImages.build(engine)
        subnet = free_subnet()
        lab = Lab(engine, host_image(engine), subnet, engine.root / "lab", systemd=True)
        first = subnet.network_address
        nodes = {"manager1": str(first + 10), "worker1": str(first + 20), "worker2": str(first + 21)}
        lab.add_nodes(list(nodes.items()))
        for ref in (images.haproxy, images.app):
            lab.load_image(ref)
        estate = existing_estate(subnet, nodes, images)
        stack = PulumiStack.create(work / "pulumi", "existing", {"swarm-estate:estate": estate},
                                   secrets={"swarm-estate:sshPrivateKey": lab.key.read_text()},
                                   extra_env=operator_ssh(lab.subnet, lab.key, work / "ssh"))
        manager = lab.nodes["manager1"]

        def on_manager(args: Any, timeout: float) -> str:
            return manager.docker(*args, timeout=timeout).stdout

        def on_node(node: str, args: Any, timeout: float) -> str:
            return lab.nodes[node].docker(*args, timeout=timeout).stdout

        yield Existing(lab, stack, nodes, Swarm(on_manager, on_node))
    finally:
        if stack is not None:
            stack.run("destroy", "--yes", "--skip-preview", check=False)
        engine.stop()


def test_up_bootstraps_the_hosts_and_forms_the_swarm_over_ssh(existing: Existing) -> None:
    plan = existing.stack.preview()
    assert {s.op for s in plan.steps} == {"create"}
    host_steps = [s for s in plan.steps if s.type.startswith("command:") and ("swarm-estate:swarm:" in s.urn
                                                                            or "swarm-estate:hosts:" in s.urn)]
    assert host_steps and {s.type for s in host_steps} == {"command:remote:Command"}  # over SSH: the prod path
    existing.stack.up()
    for name, node in existing.lab.nodes.items():
        assert node.ssh(f"test -s {READY_MARKER}", check=False).returncode == 0, f"{name}: no ready marker"
        assert node.ssh("systemctl is-active swarm-estate-firewall.service docker.service").returncode == 0
    nodes = existing.swarm.nodes()
    assert sorted(nodes) == sorted(existing.nodes)
    assert all(nodes[w]["Spec"]["Labels"].get("l7") == "true" for w in ("worker1", "worker2"))
    assert nodes["manager1"]["Spec"]["Role"] == "manager"
    provider = [r for r in existing.stack.resources() if r["urn"].endswith("::existing-swarm-provider")]
    assert provider and provider[0]["inputs"]["host"].startswith(f"ssh://{OPS_USER}@")


def test_the_l7_serves_the_demo_on_each_worker_from_its_replicas(existing: Existing) -> None:
    wait_until(lambda: existing.swarm.task_nodes("l7_haproxy") == ["worker1", "worker2"], SETTLE_S,
               "one L7 task on each worker")
    replicas = wait_until(
        lambda: len(existing.swarm.replicas_by_hostname("demo_web")) == 2 and existing.swarm.replicas_by_hostname(
            "demo_web"),
        SETTLE_S, "two demo replicas")
    for worker in ("worker1", "worker2"):
        entry = f"https://{existing.nodes[worker]}:443"  # the L7 task's host-mode port on that host
        wait_until(
            lambda e=entry: {request(e, DEMO_HOST, "/hostname", own=existing.lab.subnet).body.strip()
                             for _ in range(8)} == set(replicas),
            SETTLE_S, f"both replicas through {entry}")


def test_a_second_run_changes_nothing_on_the_hosts_or_in_the_plan(existing: Existing) -> None:
    existing.stack.preview(expect_no_changes=True)
    existing.stack.up()
    assert set(existing.stack.last_update_changes()) == {"same"}


def test_destroy_takes_everything_down_but_keeps_the_last_manager_by_design(existing: Existing) -> None:
    # --continue-on-error: the refusal at the last manager does not stop the deletes that do not depend on it
    result = existing.stack.run("destroy", "--yes", "--skip-preview", "--continue-on-error", check=False)
    assert result.returncode != 0 and LAST_MANAGER_REFUSAL in result.stdout + result.stderr, result.stdout[-4000:]
    for worker in ("worker1", "worker2"):  # drained, left and removed for real
        state = existing.lab.nodes[worker].docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
        assert state == "inactive", worker
    manager = existing.lab.nodes["manager1"]
    assert manager.docker("node", "ls", "--format", "{{.Hostname}}").stdout.split() == ["manager1"]
    for kind in ("service", "config", "secret"):
        assert manager.docker(kind, "ls", "-q").stdout.split() == [], kind
    overlays = manager.docker("network", "ls", "--filter", "driver=overlay", "--format", "{{.Name}}").stdout
    assert overlays.split() == ["ingress"], result.stdout[-3000:]
    left = [r["urn"].rsplit("::", 1)[-1] for r in existing.stack.resources() if r.get("custom")]
    assert any(name.endswith("-manager1-membership") for name in left), left
    assert not any("worker" in name for name in left if "-swarm-" in name), left
