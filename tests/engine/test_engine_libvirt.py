"""The libvirt substrate under the real Pulumi engine, on a real libvirtd: the production path of the seed estates.

`pulumi up` of tests/libvirt/Pulumi.libvirt.yaml creates the NAT network, the base image volume (uploaded from
the offline image tools/vm_image.py builds: a partitioned disk with GRUB, booted as a cloud image is), each VM's
copy-on-write root disk and cloud-init disk, and the domains; the VMs boot under software emulation, cloud-init
applies the program's user-data and network config, the swarm forms over SSH, the docker provider reaches the
manager over `ssh://`, and the L7 serves the demo on the worker's own address. Then a no-change preview, a day-2
label change, and `pulumi destroy`, after which libvirt holds nothing of the estate.

Slow (VMs boot in about a minute each under TCG): `pytest -m libvirt` runs it alone. Phase times are printed.
"""

from __future__ import annotations

import contextlib
import copy
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.render.cloudinit import FIREWALL_TABLE, READY_MARKER
from tests.harness import Engine, free_subnet
from tests.harness import libvirt as lv
from tests.harness.estates import LocalImages
from tests.harness.hosts import operator_ssh
from tests.harness.probe import Swarm, request
from tests.harness.pulumi import ROOT, PulumiStack, phases
from tests.harness.wait import LOADED, wait_until
from tools import vm_image

pytestmark = [pytest.mark.slow, pytest.mark.libvirt,
              pytest.mark.skipif(bool(lv.missing()), reason=f"libvirt is not installed ({lv.missing()})")]

STACK_FILE = ROOT / "tests" / "libvirt" / "Pulumi.libvirt.yaml"
DEMO_HOST = "demo.vmlab.localhost"
SETTLE_S = 120 * LOADED
UP_TIMEOUT_S = 3600
PHASES = {
    "network and volumes": r"-(network|base|root|cloudinit)$",
    "domains defined and started": r"-domain$",
    "booted, cloud-init done, converged over SSH": r"-hosts-\w+-ready$",
    "swarm formed": r"-swarm-\w+-membership$",
    "L7 service": r"-l7-service$",
    "demo service": r"-stack-demo-web$",
}


def vm_estate(daemon: lv.Libvirtd, subnet: IPv4Network, image: Path, public_key: str,
              images: LocalImages) -> dict[str, Any]:
    estate = copy.deepcopy(yaml.safe_load(STACK_FILE.read_text())["config"]["swarm-estate:estate"])
    estate["hypervisors"][0].update(uri=daemon.uri, pool=daemon.pool)
    estate["node_network"]["subnet"] = str(subnet)
    estate["base_image"]["url"] = str(image)
    estate["ssh"]["authorized_keys"] = [public_key]
    estate["l7"]["image"] = images.haproxy_id
    estate["stacks"]["demo"]["compose"] = str(ROOT / estate["stacks"]["demo"]["compose"])
    estate["stacks"]["demo"].setdefault("variables", {})["DEMO_IMAGE"] = images.app_id
    return estate


@dataclass
class VmLab:
    daemon: lv.Libvirtd
    stack: PulumiStack
    key: Path
    subnet: IPv4Network
    addresses: dict[str, str]
    swarm: Swarm
    up_log: Path
    up_started: float = 0.0

    def estate(self) -> dict[str, Any]:
        """The stack's estate config as it stands (to change and set again)."""
        return yaml.safe_load(self.stack.config_file.read_text())["config"]["swarm-estate:estate"]

    def ssh(self, node: str, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-i", str(self.key), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
             f"ops@{self.addresses[node]}", command],
            capture_output=True, text=True, timeout=timeout, check=False,
        )


@pytest.fixture(scope="module")
def vmlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmLab]:
    work = tmp_path_factory.mktemp("engine-libvirt")
    with contextlib.ExitStack() as cleanup:  # each step undone even when the one after it fails
        try:
            daemon = lv.Libvirtd.start(owned_prefix="vmlab")
        except lv.LibvirtdRunningError as exc:
            pytest.skip(str(exc))
        cleanup.callback(daemon.stop)
        engine = Engine.start()
        cleanup.callback(engine.stop)
        images = LocalImages.build(engine)
        preload = []
        for ref in (images.haproxy, images.app):
            saved = work / f"{ref.split(':')[0]}.tar"
            engine.run("save", "-o", str(saved), ref, timeout=300)
            preload.append(saved)
        image = vm_image.disk_image(work / "image", preload=preload)
        key = work / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vmlab", "-f", str(key)], check=True)
        subnet = free_subnet()
        estate = vm_estate(daemon, subnet, image, (work / "id_ed25519.pub").read_text().strip(), images)
        stack = PulumiStack.create(work / "pulumi", "libvirt", {"swarm-estate:estate": estate},
                                   secrets={"swarm-estate:sshPrivateKey": key.read_text()},
                                   extra_env=operator_ssh(subnet, key, work / "ssh"))
        cleanup.callback(lambda: stack.run("destroy", "--yes", "--skip-preview", check=False, timeout=UP_TIMEOUT_S))
        addresses = {"manager1": str(subnet.network_address + 10), "worker1": str(subnet.network_address + 20)}
        lab: VmLab | None = None

        def on_manager(args: Any, timeout: float) -> str:
            return on_node("manager1", args, timeout)

        def on_node(node: str, args: Any, timeout: float) -> str:
            assert lab is not None
            result = lab.ssh(node, " ".join(shlex.quote(a) for a in ("docker", *args)), timeout=timeout)
            if result.returncode != 0:
                raise RuntimeError(f"docker {args} on {node}: {result.stderr.strip()}")
            return result.stdout

        lab = VmLab(daemon, stack, key, subnet, addresses, Swarm(on_manager, on_node), work / "up.jsonl")
        yield lab


def test_up_boots_the_vms_from_the_programs_disks_and_cloud_init_and_forms_the_swarm(vmlab: VmLab) -> None:
    plan = vmlab.stack.preview()
    assert {s.op for s in plan.steps} == {"create"}
    kinds = {s.type for s in plan.steps}
    assert {"libvirt:index/domain:Domain", "libvirt:index/volume:Volume", "libvirt:index/cloudInitDisk:CloudInitDisk",
            "libvirt:index/network:Network"} <= kinds
    started = vmlab.up_started = time.time()
    vmlab.stack.up("--event-log", str(vmlab.up_log), timeout=UP_TIMEOUT_S)
    print(f"\nlibvirt estate: pulumi up from empty {time.time() - started:.0f} s (software emulation)")
    for kind, seconds in phases(vmlab.up_log, started, PHASES).items():
        print(f"  ... {kind} done at {seconds:.0f} s")
    assert {f"vmlab-{n}" for n in vmlab.addresses} <= vmlab.daemon.names("domain")
    for node in vmlab.addresses:
        # cloud-init ran the program's user-data to its end: the marker, and the firewall it rendered
        marker = vmlab.ssh(node, f"cat {READY_MARKER} && cloud-init status --long")
        assert marker.returncode == 0 and "status: done" in marker.stdout, (node, marker.stdout, marker.stderr)
        rules = vmlab.ssh(node, f"sudo nft list table inet {FIREWALL_TABLE}")
        assert rules.returncode == 0 and "tcp dport { 2375, 2376 } drop" in rules.stdout, (node, rules.stderr)
        assert f"ip saddr {vmlab.subnet} tcp dport {{ 2377, 7946 }} accept" in rules.stdout
        grown = vmlab.ssh(node, "df --output=size -B1G / | tail -1")
        assert int(grown.stdout.strip()) >= 5, (node, grown.stdout)  # growpart took the root disk's 6 GiB
    nodes = vmlab.swarm.nodes()
    assert sorted(nodes) == ["manager1", "worker1"]
    assert nodes["manager1"]["Spec"]["Role"] == "manager"
    assert nodes["worker1"]["Spec"]["Labels"].get("l7") == "true"


def test_the_l7_serves_the_demo_on_the_workers_address(vmlab: VmLab) -> None:
    wait_until(lambda: vmlab.swarm.task_nodes("l7_haproxy") == ["worker1"], SETTLE_S, "the L7 task on worker1")
    replicas = wait_until(lambda: vmlab.swarm.replicas_by_hostname("demo_web"), SETTLE_S, "the demo replica")
    entry = f"https://{vmlab.addresses['worker1']}:443"
    answer = wait_until(lambda: (a := request(entry, DEMO_HOST, "/hostname", own=vmlab.subnet)).status == 200 and a,
                        SETTLE_S, f"the demo through {entry}")
    assert answer.body.strip() in set(replicas)
    if vmlab.up_started:
        print(f"\nlibvirt estate: the demo answered through the L7 {time.time() - vmlab.up_started:.0f} s after "
              "up began")


def test_a_second_preview_plans_nothing(vmlab: VmLab) -> None:
    vmlab.stack.preview(expect_no_changes=True)


def test_a_day_2_label_converges_on_the_running_vms(vmlab: VmLab) -> None:
    estate = vmlab.estate()
    estate["swarm"]["managers"]["labels"] = ["zone=a"]
    vmlab.stack.set_config({"swarm-estate:estate": estate},
                           secrets={"swarm-estate:sshPrivateKey": vmlab.key.read_text()})
    plan = vmlab.stack.preview()
    changed = {s.name for s in plan.changed()}
    assert changed and not any(s.type.startswith("libvirt:") for s in plan.changed()), changed
    vmlab.stack.up(timeout=UP_TIMEOUT_S)
    assert vmlab.swarm.nodes()["manager1"]["Spec"]["Labels"].get("zone") == "a"
    vmlab.stack.preview(expect_no_changes=True)


def test_destroy_leaves_nothing_in_libvirt(vmlab: VmLab) -> None:
    vmlab.stack.destroy(timeout=UP_TIMEOUT_S)
    assert vmlab.daemon.leftovers() == {}
    assert not [r for r in vmlab.stack.resources() if r.get("custom")]
    # the pool's directory holds no disk either (volumes are files there)
    assert not any(vmlab.daemon.pool_dir.iterdir())

