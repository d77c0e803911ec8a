"""Systemd "existing hosts" in the lab: what `substrate: existing` converges over SSH, on real systemd.

Two nodes of tests/harness/hosts.py's image (systemd as PID 1, sshd, docker.io, nftables, chrony) on an
isolated engine. `components/scripts/bootstrap-host.sh` runs on them exactly as the ExistingHost component
sends it (`bootstrap_stdin` on the stdin of `root_shell(user)`: `bash -s` as root, `sudo -n bash -s` as ops),
with the environment the program renders for the estate below; then the swarm layer's own init/join scripts
build a 2-node swarm whose overlay network carries traffic between the hosts, through the estate's firewall.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Network

import pytest

from components.machines import bootstrap_stdin, root_shell
from components.model import EstateSpec, Node, load_estate
from components.render import cloudinit
from components.render.cloudinit import FIREWALL_TABLE, READY_MARKER, bootstrap_environment, docker_host_profile
from components.swarm import init_env, join_env, parse_kv, script_command
from tests.harness import Engine, Lab, free_subnet
from tests.harness.hosts import HOST_PACKAGES, MASKED_UNITS, OPS_USER, host_image
from tests.harness.lab import Node as LabNode
from tests.harness.wait import wait_until
from tools.images import busybox_image, image_id

pytestmark = pytest.mark.slow

SETTLE_TIMEOUT_S = 90
CAP_SYS_TIME = 25


def existing_estate(subnet: IPv4Network, install: str = "preinstalled") -> EstateSpec:
    """The estate of an operator's existing machines: the manager reached as root, worker1 as ops (sudo)."""
    at = subnet.network_address
    return load_estate(
        {
            "name": "existing",
            "domain": "dev.localhost",
            "substrate": "existing",
            "node_network": {"name": "lab", "subnet": str(subnet)},
            "ssh": {"user": "root", "private_key_secret": "sshPrivateKey"},
            "engine": {"install": install},
            "swarm": {
                "managers": {"count": 1, "nodes": [{"name": "manager1", "address": str(at + 10)}]},
                "workers": {
                    "count": 2,
                    "labels": ["l7=true"],
                    "nodes": [
                        {"name": "worker1", "address": str(at + 20), "ssh_user": OPS_USER},
                        {"name": "worker2", "address": str(at + 21)},
                    ],
                },
            },
            "public_network": {"name": "haproxy-public", "subnet": "10.10.0.0/22"},
            "l7": {"replicas": 2, "self_signed": True},
            "stacks": {},
        }
    )


@dataclass
class Estate:
    spec: EstateSpec
    lab: Lab
    timings: dict[str, float] = field(default_factory=dict)
    cluster_id: str = ""

    def model(self, name: str) -> Node:
        return next(n for n in self.spec.nodes if n.name == name)

    def host(self, name: str) -> LabNode:
        return self.lab.nodes[name]

    def bootstrap(self, name: str, install: str = "preinstalled") -> tuple[str, dict[str, str]]:
        """bootstrap-host.sh over SSH, as the ExistingHost component runs it; returns its stdout and inputs."""
        spec = existing_estate(self.spec.node_network.subnet, install) if install != "preinstalled" else self.spec
        node = next(n for n in spec.nodes if n.name == name)
        env = bootstrap_environment(spec, docker_host_profile(spec, node, vm=False), user=node.ssh_user)
        result = self.host(name).ssh(
            root_shell(node.ssh_user), input=bootstrap_stdin(env), user=node.ssh_user, timeout=300
        )
        return result.stdout.strip(), env


# Two of the estate's three hosts: enough for a swarm across hosts, and half the load on a 2-core machine.
HOSTS = ("manager1", "worker1")


@pytest.fixture(scope="module")
def estate() -> Iterator[Estate]:
    engine = Engine.start()
    try:
        started = time.monotonic()
        image = host_image(engine)
        timings = {"image": time.monotonic() - started}
        subnet = free_subnet()
        spec = existing_estate(subnet)
        lab = Lab(engine, image, subnet, engine.root / "lab", prefix="seh", systemd=True)
        booted = time.monotonic()
        nodes = [
            lab.add_node(name, str(spec_node.address), wait=False)
            for name in HOSTS
            for spec_node in spec.nodes
            if spec_node.name == name
        ]
        for node in nodes:
            node.wait_ssh()
        timings["boot to sshd"] = time.monotonic() - booted
        for node in nodes:
            node.wait_ready()
        timings["boot to docker"] = time.monotonic() - booted
        print("lab hosts:", ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))  # pytest -s shows it
        yield Estate(spec=spec, lab=lab, timings=timings)
    finally:
        engine.stop()


def test_the_image_holds_every_package_the_bootstrap_checks_for() -> None:
    """Nothing to install on an existing host, whether the estate says preinstalled or distro (no mirror here)."""
    subnet = IPv4Network("172.31.240.0/24")
    for install in ("preinstalled", "distro"):
        spec = existing_estate(subnet, install)
        for node in spec.nodes:
            missing = set(docker_host_profile(spec, node, vm=False).packages) - set(HOST_PACKAGES)
            assert not missing, f"{install}: the host image lacks {missing}"


def test_systemd_boots_as_pid_1_with_nothing_failed(estate: Estate) -> None:
    for name in HOSTS:
        host = estate.host(name)
        assert host.ssh("ps -o comm= -p 1").stdout.strip() == "systemd"
        state = host.ssh("systemctl is-system-running --wait", check=False, timeout=120).stdout.strip()
        failed = host.ssh("systemctl --failed --plain --no-legend --no-pager").stdout.strip()
        assert (state, failed) == ("running", ""), f"{name}: {state}; failed units:\n{failed}"
        units = "ssh.service dbus.service containerd.service docker.socket docker.service chrony.service"
        assert host.ssh(f"systemctl is-active {units}").stdout.split() == ["active"] * 6
        enabled = host.ssh(f"systemctl is-enabled {' '.join(MASKED_UNITS)}", check=False).stdout.split()
        assert enabled == ["masked"] * len(MASKED_UNITS)


def test_a_host_cannot_change_the_machine_it_runs_on(estate: Estate) -> None:
    """Kernel settings outside its network namespace and the clock are the machine's, shared by all."""
    host = estate.host("manager1")
    # Writes back the value it has: were /proc/sys writable, the machine would still see no change.
    same = "sysctl -qw kernel.keys.root_maxkeys=$(sysctl -n kernel.keys.root_maxkeys)"
    assert host.ssh(same, check=False).returncode != 0
    host.ssh("sysctl -qw net.ipv4.ip_forward=1")  # its own network namespace: dockerd needs it
    bounding = int(host.ssh("awk '/^CapBnd/ {print $2}' /proc/1/status").stdout, 16)
    assert not bounding & (1 << CAP_SYS_TIME)
    assert " -x" in host.ssh("cat /proc/$(pgrep -o chronyd)/cmdline | tr '\\0' ' '").stdout  # never steers a clock


def test_ssh_as_root_and_as_ops_with_passwordless_sudo(estate: Estate) -> None:
    host = estate.host("worker1")
    assert host.ssh("id -un").stdout.strip() == "root"
    assert host.ssh("id -un", user=OPS_USER).stdout.strip() == OPS_USER
    assert host.ssh(root_shell(OPS_USER), input="id -u\n", user=OPS_USER).stdout.strip() == "0"
    # Each host has its own identity, though all come from one image.
    keys = {estate.host(n).ssh("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub").stdout for n in HOSTS}
    ids = {estate.host(n).ssh("cat /etc/machine-id").stdout for n in HOSTS}
    assert len(keys) == len(ids) == len(HOSTS)


@pytest.mark.parametrize("name", HOSTS)
def test_bootstrap_converges_and_a_second_run_changes_nothing(estate: Estate, name: str) -> None:
    host, user = estate.host(name), estate.model(name).ssh_user
    first, env = estate.bootstrap(name)
    assert first.startswith("changed: ") and first != "changed: nothing", first
    assert "start:swarm-estate-firewall.service" in first and "restart:docker.service" in first, first
    assert f"group:docker+{user}" in first, first
    second, _ = estate.bootstrap(name)
    assert second == "changed: nothing"
    # engine.install distro finds docker.io installed: no apt-get (the lab has no mirror), nothing to do.
    assert estate.bootstrap(name, install="distro")[0] == "changed: nothing"
    assert estate.bootstrap(name)[0] == "changed: nothing"

    units = "docker.service chrony.service swarm-estate-firewall.service"
    assert host.ssh(f"systemctl is-active {units}").stdout.split() == ["active"] * 3
    assert host.ssh("systemctl is-enabled swarm-estate-firewall.service").stdout.strip() == "enabled"
    ruleset = host.ssh("nft list ruleset").stdout
    assert f"table inet {FIREWALL_TABLE}" in ruleset
    assert f"ip saddr {estate.spec.node_network.subnet} tcp dport {{ 2377, 7946 }} accept" in ruleset
    assert host.ssh(f"cat {READY_MARKER}").stdout.strip() == env["SE_DIGEST"]
    assert host.ssh(f"cat {cloudinit.DAEMON_JSON}").stdout == cloudinit.daemon_json(estate.spec)
    logging = host.ssh("docker info --format '{{.LoggingDriver}}'").stdout.strip()
    assert logging == estate.spec.engine.log_driver  # daemon.json is in force (journald: systemd's journal)
    # The swarm layer runs docker as the login user, without sudo: the docker group makes that work.
    assert host.ssh("docker info --format '{{.ServerVersion}}'", user=user).stdout.strip()


def test_bootstrap_renames_a_host_whose_name_differs_from_the_model(estate: Estate) -> None:
    host = estate.host("worker1")
    host.ssh("hostnamectl set-hostname renamed-by-hand")
    assert host.ssh("hostname").stdout.strip() == "renamed-by-hand"
    assert estate.bootstrap("worker1")[0] == "changed: hostname"
    assert host.ssh("hostname; cat /etc/hostname").stdout.split() == ["worker1", "worker1"]
    assert estate.bootstrap("worker1")[0] == "changed: nothing"


def test_two_hosts_make_a_swarm_whose_overlay_carries_traffic(estate: Estate) -> None:
    manager, worker = estate.model("manager1"), estate.model("worker1")
    first, second = estate.host("manager1"), estate.host("worker1")
    tokens = parse_kv(
        first.ssh(script_command("swarm-init.sh", init_env(estate.spec, manager)), user=manager.ssh_user).stdout
    )
    estate.cluster_id = tokens["cluster_id"]
    join = {
        **join_env(estate.spec, worker, manager),
        "JOIN_TOKEN": tokens["worker_token"],
        "CLUSTER_ID": estate.cluster_id,
    }
    second.ssh(script_command("swarm-join.sh", join), user=worker.ssh_user)
    states = first.docker("node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout.split("\n")
    assert sorted(s for s in states if s) == ["manager1 Ready", "worker1 Ready"]

    ref = busybox_image(estate.lab.engine)
    estate.lab.load_image(ref)
    first.docker("network", "create", "--driver", "overlay", "--attachable", "lab-overlay")
    # dnsrr: this kernel has no IPVS for a VIP. One replica per host, each serving its own hostname. httpd as
    # PID 1 ignores SIGTERM: a short grace period keeps a host's shutdown short.
    first.docker(
        "service",
        "create",
        "-d",
        "--no-resolve-image",
        "--name",
        "web",
        "--network",
        "lab-overlay",
        "--endpoint-mode",
        "dnsrr",
        "--replicas",
        "2",
        "--replicas-max-per-node",
        "1",
        "--stop-grace-period",
        "1s",
        image_id(estate.lab.engine, ref),
        "sh",
        "-c",
        "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www",
    )

    def running() -> list[str]:
        lines = first.docker(
            "service", "ps", "web", "--filter", "desired-state=running", "--format", "{{.Node}} {{.CurrentState}}"
        ).stdout.splitlines()
        return sorted(line.split()[0] for line in lines if line.split()[1:2] == ["Running"])

    wait_until(lambda: running() == ["manager1", "worker1"], SETTLE_TIMEOUT_S, "a web task on each host", every=1)
    tasks = {}
    for host in (first, second):
        container = host.docker("ps", "-q", "--filter", "label=com.docker.swarm.service.name=web").stdout.strip()
        address = host.docker(
            "inspect", "--format", '{{(index .NetworkSettings.Networks "lab-overlay").IPAddress}}', container
        ).stdout.strip()
        tasks[host.name] = (container, address)
    for here, there in (("manager1", "worker1"), ("worker1", "manager1")):
        container, _ = tasks[here]
        peer, address = tasks[there]

        def answer(container: str = container, address: str = address, here: str = here) -> str:
            got = estate.host(here).docker(
                "exec", container, "timeout", "10", "wget", "-qO-", f"http://{address}:8080/", check=False, timeout=60
            )
            return got.stdout.strip()

        assert wait_until(answer, 60, f"{there}'s task over the overlay from {here}", every=1) == peer


def test_a_restarted_host_comes_back_converged(estate: Estate) -> None:
    """`docker stop` halts systemd in order; on start the enabled units (firewall, engine) come back by themselves."""
    host = estate.host("worker1")
    host.stop()
    # Once every unit has stopped, systemd-shutdown halts: reboot(2) in a PID namespace ends its init with
    # SIGINT (pid_namespaces(7)), 130; a SIGKILL from the engine after the grace period would say 137.
    exit_code = estate.lab.engine.run("inspect", "--format", "{{.State.ExitCode}}", host.container).stdout.strip()
    assert exit_code in ("0", "130"), f"systemd did not halt by itself on SIGRTMIN+3 (exit code {exit_code})"
    host.start()
    assert f"table inet {FIREWALL_TABLE}" in host.ssh("nft list ruleset").stdout
    assert host.ssh("hostname").stdout.strip() == "worker1"
    assert estate.bootstrap("worker1")[0] == "changed: nothing"
    if estate.cluster_id:
        manager = estate.host("manager1")
        wait_until(
            lambda: (
                manager.docker("node", "inspect", "--format", "{{.Status.State}}", "worker1").stdout.strip() == "ready"
            ),
            SETTLE_TIMEOUT_S,
            "worker1 ready in the swarm again",
            every=1,
        )
