"""The cloud-init renderer: every generated file through the real validators, and what it must say."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.model import EstateSpec, load_estate
from components.render import cloudinit as ci
from components.render.l4 import l4_profile
from tests.harness.project import estate_of, prod_spec
from tests.harness.specs import TEST_CA, run_tool, tool, variant

VARIANTS: dict[str, dict[str, Any]] = {
    "prod": {},
    "1-manager-no-workers-no-nfs": dict(managers=1, workers=0, hypervisors=1, nfs=False),
    "3-managers-2-workers-2-hypervisors": dict(managers=3, workers=2, hypervisors=2),
    "5-managers-7-workers": dict(managers=5, workers=7),
    "registry-insecure": dict(registry="insecure"),
    "registry-ca": dict(registry="ca"),
    "no-nfs-registry-off": dict(nfs=False),
}

# Checks network config the way cloud-init itself reads it, with the distribution's cloud-init.
NETWORK_CHECK = """
import sys, yaml
from cloudinit.net.network_state import parse_net_config_data
state = parse_net_config_data(yaml.safe_load(open(sys.argv[1])), skip_broken=False)
for iface in state.iter_interfaces():
    for subnet in iface.get("subnets", []):
        print(iface["name"], subnet["type"], subnet["address"], subnet["prefix"])
"""


def _user_data_files(spec: EstateSpec) -> dict[str, str]:
    files = {n.name: ci.render_user_data(spec, ci.docker_host_profile(spec, n)) for n in spec.nodes}
    if spec.l4.enabled:
        for i, node in enumerate(spec.l4.nodes):
            files[node.name] = ci.render_user_data(spec, l4_profile(spec, i, vm=True))
    return files


def _schema_errors(path: Path) -> str | None:
    result = run_tool([tool("cloud-init"), "schema", "--config-file", str(path)])
    return None if result.returncode == 0 else result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_generated_cloud_config_passes_cloud_init_schema(name: str, tmp_path: Path) -> None:
    spec = load_estate(variant(**VARIANTS[name]))
    files = _user_data_files(spec)
    assert len(files) == len(spec.nodes) + (2 if spec.l4.enabled else 0)
    for host, text in files.items():
        path = tmp_path / f"{host}.yaml"
        path.write_text(text)
        assert text.startswith("#cloud-config\n")
        assert _schema_errors(path) is None, f"{name}/{host}: {_schema_errors(path)}"


def test_the_schema_validator_rejects_a_broken_cloud_config(tmp_path: Path) -> None:
    """Control: the validator used above does catch a wrong type, so the passes mean something."""
    spec = prod_spec()
    doc = yaml.safe_load(ci.render_user_data(spec, ci.docker_host_profile(spec, spec.nodes[0])))
    doc["ntp"]["enabled"] = "yes"
    path = tmp_path / "broken.yaml"
    path.write_text("#cloud-config\n" + yaml.safe_dump(doc))
    assert _schema_errors(path) is not None


def test_network_config_parses_with_cloud_inits_own_parser(tmp_path: Path) -> None:
    spec = prod_spec()
    for node in spec.nodes:
        path = tmp_path / f"{node.name}.net.yaml"
        path.write_text(ci.render_network_config(spec, node.address, ci.mac_address(spec, node.name)))
        result = run_tool(["/usr/bin/python3", "-c", NETWORK_CHECK, str(path)])
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["eth0", "static", str(node.address), "24"]


def test_node_cloud_config_says_what_the_host_needs() -> None:
    spec = prod_spec()
    node = spec.nodes[0]
    doc = yaml.safe_load(ci.render_user_data(spec, ci.docker_host_profile(spec, node)))
    assert doc["hostname"] == node.name
    (user,) = doc["users"]
    assert user["name"] == "ops" and user["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert user["ssh_authorized_keys"] == spec.ssh.authorized_keys
    assert "docker.io" in doc["packages"] and "nfs-common" in doc["packages"]
    assert doc["ntp"] == {"enabled": True, "ntp_client": "chrony"}
    assert doc["mounts"] == [["10.20.0.250:/export/docker", "/mnt/docker", "nfs",
                              "nfsvers=4.1,_netdev,nofail,noatime", "0", "0"]]
    files = {f["path"]: f["content"] for f in doc["write_files"]}
    assert json.loads(files["/etc/docker/daemon.json"]) == {"log-driver": "journald"}
    # The ready marker is the very last step, and only written when the engine runs and NFS is
    # mounted: the swarm layer must not join a half-built host.
    marker = doc["runcmd"][-1][-1]
    assert marker.endswith(f"> {ci.READY_MARKER}")
    assert marker.startswith(
        "systemctl is-active --quiet swarm-estate-firewall.service chrony.service docker.service"
        " && mountpoint -q /mnt/docker && "
    )
    restarts = [c for c in doc["runcmd"] if c[:2] == ["systemctl", "restart"]]
    assert ["systemctl", "restart", "docker.service"] in restarts


def test_an_offline_site_installs_nothing_and_its_marker_checks_the_image(tmp_path: Path) -> None:
    raw = estate_of("prod")
    raw["base_image"]["offline"] = True
    spec = load_estate(raw)
    profile = ci.docker_host_profile(spec, spec.nodes[0])
    text = ci.render_user_data(spec, profile)
    doc = yaml.safe_load(text)
    # cloud-init's package module would run `apt-get update` against a mirror nobody reaches
    assert "packages" not in doc and "package_update" not in doc
    marker = doc["runcmd"][-1][-1]
    assert marker.startswith("{ [ \"$(dpkg-query -W -f='${db:Status-Abbrev}' nftables chrony qemu-guest-agent "
                             "docker.io nfs-common 2>/dev/null)\" = 'ii ii ii ii ii ' ]")
    # the check itself, run by sh on this machine: its own packages pass, a removed or unknown one does not
    check = marker.split(" && ")[0]
    for names, ok in ((["dpkg", "bash"], True), (["dpkg", "no-such-package-here"], False)):
        probe = check.replace("nftables chrony qemu-guest-agent docker.io nfs-common", " ".join(names))
        probe = probe.replace("'ii ii ii ii ii '", "'" + "ii " * len(names) + "'")
        assert (subprocess.run(["sh", "-c", probe], check=False).returncode == 0) is ok, probe
    path = tmp_path / "offline.yaml"
    path.write_text(text)
    result = run_tool([tool("cloud-init"), "schema", "--config-file", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert ci.bootstrap_environment(spec, profile)["SE_OFFLINE"] == "1"
    assert ci.bootstrap_environment(prod_spec(), ci.docker_host_profile(prod_spec(), spec.nodes[0]))["SE_OFFLINE"] == ""


def test_registry_is_trusted_by_ca_unless_explicitly_insecure() -> None:
    with_ca = load_estate(variant(registry="ca"))
    files = {f.path: f.content for f in ci.docker_host_profile(with_ca, with_ca.nodes[0]).files}
    assert files["/etc/docker/certs.d/docker-registry.d4science.org/ca.crt"] == TEST_CA
    assert "insecure-registries" not in json.loads(files[ci.DAEMON_JSON])

    insecure = load_estate(variant(registry="insecure"))
    files = {f.path: f.content for f in ci.docker_host_profile(insecure, insecure.nodes[0]).files}
    assert json.loads(files[ci.DAEMON_JSON])["insecure-registries"] == ["docker-registry.d4science.org"]
    assert not any(p.startswith("/etc/docker/certs.d/") for p in files)


def test_daemon_json_never_opens_the_api_on_tcp_in_any_variant() -> None:
    for kwargs in VARIANTS.values():
        spec = load_estate(variant(**kwargs))
        config = json.loads(ci.daemon_json(spec))
        assert "hosts" not in config and "tls" not in config
        assert config["log-driver"] == spec.engine.log_driver


def test_no_nfs_means_no_mounts_and_no_nfs_client() -> None:
    spec = load_estate(variant(nfs=False))
    doc = yaml.safe_load(ci.render_user_data(spec, ci.docker_host_profile(spec, spec.nodes[0])))
    assert "mounts" not in doc
    assert "nfs-common" not in doc["packages"]


def test_mounts_follow_the_roles_they_are_given() -> None:
    raw = variant()
    raw["nfs"]["mounts"].append(
        {"export": "docker", "target": "/srv/backups", "subpath": "backups", "roles": ["manager"]}
    )
    spec = load_estate(raw)
    for node in spec.nodes:
        targets = [m.target for m in ci.nfs_mounts(spec, node)]
        expected = ["/mnt/docker", "/srv/backups"] if node.role == "manager" else ["/mnt/docker"]
        assert targets == expected, node.name
    manager_mounts = ci.nfs_mounts(spec, spec.managers[0])
    assert manager_mounts[1].device == "10.20.0.250:/export/docker/backups"


def test_firewall_passes_nft_check_and_limits_swarm_ports_to_the_node_subnet(tmp_path: Path) -> None:
    raw = variant()
    raw["swarm"]["data_path_port"] = 7789
    spec = load_estate(raw)
    rules = ci.firewall_rules(spec)
    path = tmp_path / "firewall.nft"
    path.write_text(rules)
    # `nft -c` parses and checks against the kernel without changing anything; a private
    # user+network namespace keeps even that away from the machine running the tests.
    result = run_tool(["unshare", "-rn", tool("nft"), "-c", "-f", str(path)])
    assert result.returncode == 0, result.stderr
    assert "ip saddr 10.20.0.0/24 tcp dport { 2377, 7946 } accept" in rules
    assert "ip saddr 10.20.0.0/24 udp dport { 7946, 7789 } accept" in rules
    assert "udp dport { 7946, 7789 } drop" in rules and "4789" not in rules
    assert "tcp dport { 2375, 2376 } drop" in rules


def test_nft_check_rejects_a_broken_ruleset(tmp_path: Path) -> None:
    """Control for the firewall check above."""
    path = tmp_path / "broken.nft"
    path.write_text(ci.firewall_rules(prod_spec()).replace("tcp dport", "tcp dprot", 1))
    assert run_tool(["unshare", "-rn", tool("nft"), "-c", "-f", str(path)]).returncode != 0


def test_rhel_family_gets_its_package_names_and_the_docker_repo() -> None:
    raw = variant()
    raw["base_image"]["family"] = "rhel"
    spec = load_estate(raw)
    profile = ci.docker_host_profile(spec, spec.nodes[0])
    assert "docker-ce" in profile.packages and "nfs-utils" in profile.packages
    assert "docker.io" not in profile.packages
    assert ci.DOCKER_REPO_RHEL in {f.path for f in profile.files}


def test_mac_addresses_are_stable_and_distinct() -> None:
    spec = prod_spec()
    macs = [ci.mac_address(spec, n.name) for n in spec.nodes] + [ci.mac_address(spec, n.name) for n in spec.l4.nodes]
    assert len(set(macs)) == len(macs)
    assert all(m.startswith("52:54:00:") for m in macs)
    assert macs == [ci.mac_address(prod_spec(), n.name) for n in spec.nodes] + macs[len(spec.nodes):]


# Runs as root of a private user+network namespace (the "node"), with a veth to a second namespace
# (the "peer") that holds one address inside the node subnet and one outside it.
FIREWALL_LAB = r"""
set -eu
ip link set lo up
unshare -n sleep 60 &
peer=$!
trap 'kill $peer' EXIT
for _ in $(seq 50); do [ "$(readlink /proc/$peer/ns/net)" != "$(readlink /proc/self/ns/net)" ] && break; sleep 0.1; done
ip link add v0 type veth peer name v1 netns /proc/$peer/ns/net
ip addr add 10.20.0.10/24 dev v0
ip addr add 192.168.9.1/24 dev v0
ip link set v0 up
nsenter --net=/proc/$peer/ns/net sh -c \
  'ip link set lo up; ip addr add 10.20.0.99/24 dev v1; ip addr add 192.168.9.2/24 dev v1; ip link set v1 up'
if [ -n "${RULES:-}" ]; then nft -f "$RULES"; fi
"$PY" "$LAB/listen.py" "$LAB/heard-$ROUND" & listener=$!
for _ in $(seq 100); do [ -e "$LAB/heard-$ROUND" ] && break; sleep 0.1; done
nsenter --net=/proc/$peer/ns/net "$PY" "$LAB/probe.py" > "$LAB/probed-$ROUND"
sleep 0.3
kill $listener
"""

LISTEN = r"""
import select, socket, sys
socks = []
for port in (2375, 2376, 2377, 7946, 8080):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", port)); s.listen()
    socks.append(s)
udp = []
for port in (4789, 7946, 9999):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", port)); udp.append(u)
out = open(sys.argv[1], "w", buffering=1)  # appears once every port is bound
while True:
    ready, _, _ = select.select(socks + udp, [], [])
    for s in ready:
        if s in udp:
            data, (src, _) = s.recvfrom(100)
            out.write(f"udp {s.getsockname()[1]} {src}\n")
        else:
            s.accept()[0].close()
"""

PROBE = r"""
import socket
for dst in ("10.20.0.10", "192.168.9.1"):
    for port in (2375, 2376, 2377, 7946, 8080):
        s = socket.socket(); s.settimeout(0.5)
        try:
            s.connect((dst, port)); print(f"tcp {port} {dst} open")
        except OSError:
            print(f"tcp {port} {dst} blocked")
        s.close()
    for port in (4789, 7946, 9999):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b"x", (dst, port)); u.close()
"""


@pytest.mark.slow
def test_firewall_really_limits_swarm_ports_to_the_node_subnet(tmp_path: Path) -> None:
    """Load the generated ruleset in a throwaway network namespace and knock on every port.

    Round 0 runs without the rules (everything reachable: the lab works), round 1 with them.
    """
    rules = tmp_path / "firewall.nft"
    rules.write_text(ci.firewall_rules(prod_spec()))
    (tmp_path / "listen.py").write_text(LISTEN)
    (tmp_path / "probe.py").write_text(PROBE)
    for name in ("nft", "ip", "nsenter", "unshare"):
        tool(name)
    for round_ in (0, 1):
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PY": sys.executable, "LAB": str(tmp_path)}
        env["ROUND"] = str(round_)
        if round_:
            env["RULES"] = str(rules)
        result = run_tool(["unshare", "-rn", "bash", "-c", FIREWALL_LAB], env=env)
        assert result.returncode == 0, result.stderr
    tcp = {round_: set((tmp_path / f"probed-{round_}").read_text().splitlines()) for round_ in (0, 1)}
    udp = {round_: set((tmp_path / f"heard-{round_}").read_text().splitlines()) for round_ in (0, 1)}
    inside, outside = "10.20.0.10", "192.168.9.1"
    assert all(line.endswith("open") for line in tcp[0]) and len(tcp[0]) == 10
    assert len(udp[0]) == 6
    assert tcp[1] == {
        f"tcp 2375 {inside} blocked", f"tcp 2375 {outside} blocked",  # the Docker API: never, from anywhere
        f"tcp 2376 {inside} blocked", f"tcp 2376 {outside} blocked",
        f"tcp 2377 {inside} open", f"tcp 2377 {outside} blocked",  # swarm management: node subnet only
        f"tcp 7946 {inside} open", f"tcp 7946 {outside} blocked",  # gossip
        f"tcp 8080 {inside} open", f"tcp 8080 {outside} open",  # anything else is not this table's business
    }
    assert udp[1] == {"udp 4789 10.20.0.99", "udp 7946 10.20.0.99", "udp 9999 10.20.0.99", "udp 9999 192.168.9.2"}
