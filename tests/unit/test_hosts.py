"""The hosts layer under the mock engine, and bootstrap-host.sh converging a host twice."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from components.estate import MachineLayer
from components.hosts import WORKER_WAVES
from components.l4 import L4Pair
from components.machines import BOOTSTRAP_SCRIPT, SECRET_FILES_SCRIPT, bootstrap_stdin, secret_files_stdin
from components.model import EstateSpec, load_estate
from components.render import cloudinit as ci
from components.render.cloudinit import HostFile
from components.render.l4 import SECRET_UNITS, l4_profile, l4_secret_files
from tests.harness import schema
from tests.harness.project import TEST_SECRETS, estate_of, prod_spec
from tests.harness.specs import run_tool, synth_hosts, tool, variant
from tools.synth import SynthResult

DOMAIN = "libvirt:index/domain:Domain"
VOLUME = "libvirt:index/volume:Volume"
SEED = "libvirt:index/cloudInitDisk:CloudInitDisk"
NETWORK = "libvirt:index/network:Network"
PROVIDER = "pulumi:providers:libvirt"
COMMAND = "command:remote:Command"
GIB = 1024**3


@pytest.fixture(scope="module")
def prod() -> tuple[SynthResult, MachineLayer]:
    return synth_hosts(estate_of("prod"))


def _domain_hypervisors(result: SynthResult) -> dict[str, str]:
    """VM name (as libvirt sees it) -> hypervisor, read from the provider each domain was sent to."""
    return {r["inputs"]["name"]: r["provider"].removeprefix("x-site-") for r in result.by_type(DOMAIN)}


@pytest.mark.parametrize("hypervisors, most_per_hypervisor", [(2, 2), (3, 1)])
def test_three_managers_spread_over_the_hypervisors(hypervisors: int, most_per_hypervisor: int) -> None:
    result, _ = synth_hosts(variant(managers=3, workers=2, hypervisors=hypervisors))
    placed = _domain_hypervisors(result)
    managers = [placed[f"prod-docker-swarm-mgr{i}"] for i in (1, 2, 3)]
    assert len(set(managers)) == min(3, hypervisors)
    assert max(Counter(managers).values()) == most_per_hypervisor
    # A VM's disks live where its domain runs.
    for vm in result.by_type("swarm-estate:hosts:VirtualMachine"):
        providers = {r["provider"] for r in result.resources if r["parent"] == vm["name"] and r["type"] != COMMAND}
        assert len(providers) == 1, vm["name"]


def test_one_libvirt_provider_per_hypervisor(prod: tuple[SynthResult, MachineLayer]) -> None:
    result, _ = prod
    providers = {r["name"]: r["inputs"]["uri"] for r in result.by_type(PROVIDER)}
    assert providers == {f"x-site-{h.name}": h.uri for h in prod_spec().hypervisors}
    libvirt_resources = [r for r in result.resources if r["type"].startswith("libvirt:")]
    assert libvirt_resources and all(r["provider"] in providers for r in libvirt_resources)
    assert Counter(r["provider"] for r in result.by_type(NETWORK)) == Counter(list(providers))
    bases = [r for r in result.by_type(VOLUME) if r["name"].endswith("-base")]
    assert Counter(r["provider"] for r in bases) == Counter(list(providers))


def test_uploads_to_one_hypervisor_go_one_at_a_time(prod: tuple[SynthResult, MachineLayer]) -> None:
    """go-libvirt hangs for good when two uploads stream at once (the base image and the cloud-init disks, seen
    under the real engine): on each hypervisor every upload depends on the one before it."""
    result, _ = prod
    uploads = [r for r in result.resources
               if r["name"].endswith("-base") or r["type"] == "libvirt:index/cloudInitDisk:CloudInitDisk"]
    for provider in {r["provider"] for r in uploads}:
        chain = [r for r in uploads if r["provider"] == provider]  # in registration order
        assert chain[0]["name"].endswith("-base") and len(chain) > 2, [r["name"] for r in chain]
        for before, after in zip(chain, chain[1:], strict=False):
            assert before["name"] in after["dependencies"], (before["name"], after["name"])


def test_adding_a_worker_leaves_every_existing_resource_unchanged(prod: tuple[SynthResult, MachineLayer]) -> None:
    before, _ = prod
    raw = estate_of("prod")
    raw["swarm"]["workers"]["count"] += 1
    after, _ = synth_hosts(raw)
    after_by_name = {r["name"]: r for r in after.resources}
    for resource in before.resources:
        again = after_by_name[resource["name"]]
        assert (again["inputs"], again["options"], again["provider"]) == (
            resource["inputs"],
            resource["options"],
            resource["provider"],
        ), resource["name"]
    added = {r["name"] for r in after.resources} - {r["name"] for r in before.resources}
    assert added and all(name.startswith("x-hosts-docker-swarm6") for name in added)
    assert _domain_hypervisors(after)["prod-docker-swarm6"] == "kvm3"  # the next slot of the round-robin


def test_prod_protects_domains_and_disks_and_the_switch_turns_it_off(prod: tuple[SynthResult, MachineLayer]) -> None:
    result, _ = prod
    guarded = result.by_type(DOMAIN) + [r for r in result.by_type(VOLUME) if r["name"].endswith("-root")]
    assert len(guarded) == 2 * 10  # 8 nodes + the L4 pair
    assert all(r["options"]["protect"] for r in guarded)
    raw = estate_of("prod")
    raw["protect"] = False
    unprotected, _ = synth_hosts(raw)
    assert not any(r["options"]["protect"] for r in unprotected.resources)


@pytest.mark.skipif(not schema.available(), reason="provider schemas (../shared/provider-schemas) not present")
@pytest.mark.parametrize("substrate", ["libvirt", "existing"])
def test_every_resource_uses_only_properties_of_its_provider_schema(substrate: str) -> None:
    result, _ = synth_hosts(variant(substrate=substrate))
    problems = [p for r in result.resources for p in schema.problems(r)]
    assert problems == []


def test_vm_inputs_come_from_the_model(prod: tuple[SynthResult, MachineLayer]) -> None:
    result, _ = prod
    spec = prod_spec()
    node = next(n for n in spec.nodes if n.name == "docker-swarm1")
    domain = result.named("x-hosts-docker-swarm1-domain")["inputs"]
    assert (domain["vcpu"], domain["memory"]) == (4, 16384)
    assert domain["qemuAgent"] is True and domain["autostart"] is True
    assert domain["networkInterfaces"] == [{"networkName": "swarm", "mac": ci.mac_address(spec, node.name)}]
    assert domain["disks"] == [{"volumeId": "x-hosts-docker-swarm1-root-id"}]
    assert domain["cloudinit"] == "x-hosts-docker-swarm1-cloudinit-id"
    root = result.named("x-hosts-docker-swarm1-root")["inputs"]
    assert root["size"] == 100 * GIB and root["baseVolumeId"] == "x-site-kvm1-base-id" and root["pool"] == "vmstore"
    base = result.named("x-site-kvm1-base")["inputs"]
    assert base["source"] == spec.base_image.url
    seed = result.named("x-hosts-docker-swarm1-cloudinit")
    assert seed["inputs"]["userData"] == result.files["cloud-init/docker-swarm1.yaml"]
    assert "10.20.0.20/24" in seed["inputs"]["networkConfig"]
    assert seed["options"]["ignoreChanges"] == ["metaData", "networkConfig", "userData"]
    network = result.named("x-site-kvm1-network")["inputs"]
    assert network == {"name": "swarm", "mode": "bridge", "bridge": "br0", "autostart": True}


def rolls_after(spec: EstateSpec, name: str) -> list[str]:
    """The rolling rule: each manager after the one before; each worker wave after the whole previous wave."""
    managers = [n.name for n in spec.managers]
    if name in managers:
        i = managers.index(name)
        return managers[i - 1 : i] if i else []
    (node,) = [n for n in spec.workers if n.name == name]
    wave = node.index % WORKER_WAVES
    return [n.name for n in spec.workers if wave and n.index % WORKER_WAVES == wave - 1]


def test_records_follow_the_model_and_wait_for_the_bootstrap(prod: tuple[SynthResult, MachineLayer]) -> None:
    result, hosts = prod
    spec = prod_spec()
    assert [r.node.name for r in hosts.records] == [n.name for n in spec.nodes]
    assert isinstance(hosts.l4, L4Pair)
    for record in hosts.records:
        assert record.container is None and record.connection is not None
        (ready,) = record.ready
        command = result.named(f"x-hosts-{record.node.name}-ready")
        # Its own VM, and the hosts before it in the rolling order (one manager at a time, workers in waves).
        before = [f"x-hosts-{n}-ready" for n in rolls_after(spec, record.node.name)]
        assert command["dependencies"] == sorted([f"x-hosts-{record.node.name}-domain", *before])
        assert command["inputs"]["create"] == "sudo -n bash -s"
        stdin = command["inputs"]["stdin"]
        assert f"export SE_HOSTNAME={record.node.name}\n" in stdin
        assert "export SE_WAIT_SECONDS=1200\n" in stdin
        assert stdin.endswith((Path("components/scripts/bootstrap-host.sh")).read_text())
        assert command["inputs"]["triggers"] == [
            f"x-hosts-{record.node.name}-domain-id",
            hashlib.sha256(stdin.encode()).hexdigest(),
        ]
        assert command["inputs"]["connection"] == "[secret]"  # it carries the private key


def test_the_vrrp_password_travels_apart_and_everything_else_stays_readable(
    prod: tuple[SynthResult, MachineLayer],
) -> None:
    result, _ = prod
    text = json.dumps(result.resources) + json.dumps(result.files)
    for key in ("swarm-estate:sshPrivateKey", "swarm-estate:vrrpPassword"):
        assert TEST_SECRETS[key] not in text
    for node in ("swarm-lb1", "swarm-lb2"):
        assert "include /etc/keepalived/vrrp-auth.conf" in result.files[f"l4/keepalived-{node}.conf"]
        seed = result.named(f"x-l4-{node}-cloudinit")["inputs"]
        assert "keepalived.conf" in seed["userData"]  # readable: a reviewer sees what the L4 host gets
        ready = result.named(f"x-l4-{node}-ready")["inputs"]
        assert "export SE_FILES=" in ready["stdin"] and ready["triggers"][1] != "[secret]"
        secrets = result.named(f"x-l4-{node}-ready-secret-files")
        assert secrets["inputs"]["stdin"] == "[secret]" and "secret-files.sh" in secrets["inputs"]["create"]
        # the password is installed before the host is converged (keepalived starts only once it is there)
        assert f"x-l4-{node}-ready-secret-files" in result.named(f"x-l4-{node}-ready")["dependencies"]


def test_every_generated_file_is_published(prod: tuple[SynthResult, MachineLayer]) -> None:
    result, _ = prod
    names = [n.name for n in prod_spec().nodes] + ["swarm-lb1", "swarm-lb2"]
    assert set(result.files) == (
        {f"cloud-init/{n}.yaml" for n in names}
        | {"l4/haproxy.cfg", "l4/keepalived-swarm-lb1.conf", "l4/keepalived-swarm-lb2.conf"}
    )


def test_an_l4_config_change_reaches_the_hosts_without_touching_the_vms(prod: tuple[SynthResult, MachineLayer]) -> None:
    before, _ = prod
    raw = estate_of("prod")
    raw["swarm"]["workers"]["nodes"].append({"name": "docker-swarm4", "labels": ["l7=true"]})
    after, _ = synth_hosts(raw)
    assert "docker-swarm4" in after.files["l4/haproxy.cfg"] and "docker-swarm4" not in before.files["l4/haproxy.cfg"]
    for node in ("swarm-lb1", "swarm-lb2"):
        for part in ("domain", "root"):
            name = f"x-l4-{node}-{part}"
            assert after.named(name)["inputs"] == before.named(name)["inputs"], name


def test_a_profile_change_reruns_the_bootstrap_but_keeps_the_vm(prod: tuple[SynthResult, MachineLayer]) -> None:
    before, _ = prod
    raw = estate_of("prod")
    raw["engine"]["log_driver"] = "json-file"
    after, _ = synth_hosts(raw)
    name = "x-hosts-docker-swarm-mgr1"
    assert after.named(f"{name}-domain")["inputs"] == before.named(f"{name}-domain")["inputs"]
    assert after.named(f"{name}-ready")["inputs"]["triggers"] != before.named(f"{name}-ready")["inputs"]["triggers"]


def test_network_modes_nat_and_existing() -> None:
    raw = variant(hypervisors=1)
    raw["node_network"] = {"name": "swarm", "subnet": "10.20.0.0/24", "mode": "nat"}
    result, _ = synth_hosts(raw)
    (network,) = result.by_type(NETWORK)
    assert network["inputs"] == {
        "name": "swarm",
        "mode": "nat",
        "addresses": ["10.20.0.0/24"],
        "dhcp": {"enabled": False},
        "autostart": True,
    }
    raw["node_network"]["mode"] = "existing"
    raw["hypervisors"][0]["network"] = "lan42"
    result, _ = synth_hosts(raw)
    assert result.by_type(NETWORK) == []
    assert {r["inputs"]["networkInterfaces"][0]["networkName"] for r in result.by_type(DOMAIN)} == {"lan42"}


def test_base_image_from_an_existing_volume() -> None:
    raw = variant()
    raw["base_image"] = {"name": "debian-12", "url": None, "volume": "debian-12-golden.qcow2"}
    result, _ = synth_hosts(raw)
    assert not [r for r in result.by_type(VOLUME) if r["name"].endswith("-base")]
    root = result.named("x-hosts-docker-swarm1-root")["inputs"]
    assert (root["baseVolumeName"], root["baseVolumePool"]) == ("debian-12-golden.qcow2", "vmstore")


def test_existing_hosts_are_bootstrapped_over_ssh() -> None:
    raw = variant(substrate="existing")
    raw["swarm"]["workers"]["nodes"][0]["ssh_user"] = "root"
    result, hosts = synth_hosts(raw)
    assert {r.node.ssh_user for r in hosts.records} == {"root", "ops"}
    assert not [r for r in result.resources if r["type"].startswith("libvirt:") or r["type"] == PROVIDER]
    spec = load_estate(raw)
    hosts_made = result.by_type("swarm-estate:hosts:ExistingHost")
    assert len(hosts_made) == len(spec.nodes) + 2
    for record in hosts.records:
        command = result.named(f"x-hosts-{record.node.name}-bootstrap")
        assert record.ready[0] is not None and len(record.ready) == 1
        stdin = command["inputs"]["stdin"]
        assert "export SE_WAIT_SECONDS=" not in stdin  # nothing to wait for: no cloud-init here
        assert command["inputs"]["triggers"] == [hashlib.sha256(stdin.encode()).hexdigest()]
        expected_shell = "bash -s" if record.node.ssh_user == "root" else "sudo -n bash -s"
        assert command["inputs"]["create"] == expected_shell
        assert "qemu-guest-agent" not in stdin
        assert f"export SE_USER={record.node.ssh_user}\n" in stdin  # the login that joins the docker group
    assert "export SE_FILES=" in result.named("x-l4-swarm-lb1-bootstrap")["inputs"]["stdin"]
    assert result.named("x-l4-swarm-lb1-bootstrap-secret-files")["inputs"]["stdin"] == "[secret]"
    for r in hosts.records:
        deps = result.named(f"x-hosts-{r.node.name}-bootstrap")["dependencies"]
        assert deps == sorted(f"x-hosts-{n}-bootstrap" for n in rolls_after(spec, r.node.name))
    # lb2 converges after lb1, each once its password is installed
    assert result.named("x-l4-swarm-lb2-bootstrap")["dependencies"] == [
        "x-l4-swarm-lb1-bootstrap", "x-l4-swarm-lb2-bootstrap-secret-files"
    ]
    assert result.named("x-l4-swarm-lb2-bootstrap-secret-files")["dependencies"] == ["x-l4-swarm-lb1-bootstrap"]


def test_rolling_order_keeps_the_critical_path_independent_of_the_worker_count() -> None:
    def depth(workers: int) -> int:
        raw = variant(substrate="existing")
        raw["swarm"]["workers"]["nodes"] = [
            {"name": f"w{i}", "address": f"10.20.0.{100 + i}", "labels": ["l7=true"] if i < 3 else []}
            for i in range(workers)
        ]
        raw["swarm"]["workers"].pop("count", None)
        result, _ = synth_hosts(raw)
        return result.critical_path()

    assert depth(5) == depth(50)


def test_the_docker_substrate_is_not_this_layers_job() -> None:
    raw = estate_of("prod")
    dev = {
        "name": "dev",
        "domain": "dev.localhost",
        "substrate": "docker",
        "node_network": {"name": "swarm-dev", "subnet": "172.28.0.0/24"},
        "swarm": {"managers": 1, "workers": {"count": 2, "labels": ["l7=true"]}},
        "l7": {"replicas": 2},
    }
    assert raw["substrate"] == "libvirt"
    result, hosts = synth_hosts(dev)
    assert hosts.records == [] and hosts.l4 is None
    assert result.resources == []  # components/dind.py makes the docker substrate's nodes


# --- bootstrap-host.sh on a sandboxed root, with the system commands recorded ---------------------


def test_bootstrap_script_passes_shellcheck() -> None:
    result = run_tool([tool("shellcheck"), "--shell=bash", str(BOOTSTRAP_SCRIPT)])
    assert result.returncode == 0, result.stdout


STUBS = {
    "dpkg-query": 'for a; do p=$a; done; [ -f "$STATE/pkg/$p" ] && echo "install ok installed" || exit 1',
    "apt-get": 'for a; do case $a in -*|*::*|install|update) ;; *) touch "$STATE/pkg/$a" ;; esac; done',
    "systemctl": """
        cmd=$1; shift; for a; do u=$a; done
        case $cmd in
        is-enabled) [ -f "$STATE/enabled/$u" ] ;;
        is-active) [ -f "$STATE/active/$u" ] ;;
        enable) touch "$STATE/enabled/$u" ;;
        restart|reload-or-restart) touch "$STATE/active/$u" ;;
        esac""",
    "mountpoint": '[ -f "$STATE/mounted/$(echo "$2" | tr / _)" ]',
    "mount": 'touch "$STATE/mounted/$(echo "$1" | tr / _)"',
    "id": 'cat "$STATE/groups" 2>/dev/null || echo ops',
    "usermod": 'echo "ops docker" > "$STATE/groups"',
}


@pytest.fixture
def sandbox(tmp_path: Path) -> dict[str, Any]:
    stubs, state, root = tmp_path / "bin", tmp_path / "state", tmp_path / "root"
    for d in (stubs, root, *(state / s for s in ("pkg", "enabled", "active", "mounted"))):
        d.mkdir(parents=True)
    for name, body in STUBS.items():
        path = stubs / name
        path.write_text(f'#!/bin/bash\necho "{name} $*" >> "$STATE/calls"\n{body}\n')
        path.chmod(0o755)
    return {"stubs": stubs, "state": state, "root": root}


def _converge(sandbox: dict[str, Any], env: dict[str, str]) -> tuple[str, list[str]]:
    calls = sandbox["state"] / "calls"
    calls.unlink(missing_ok=True)
    stdin = bootstrap_stdin({**env, "SE_ROOT": str(sandbox["root"])})
    run_env = {"PATH": f"{sandbox['stubs']}:/usr/bin:/bin", "STATE": str(sandbox["state"]), "HOME": "/tmp"}
    result = subprocess.run(["bash", "-s"], input=stdin, capture_output=True, text=True, env=run_env, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), calls.read_text().splitlines() if calls.exists() else []


def _acting(calls: list[str]) -> list[str]:
    queries = ("dpkg-query", "systemctl is-", "mountpoint", "id ")
    return [c for c in calls if not c.startswith(queries)]


def test_bootstrap_converges_once_and_then_changes_nothing(sandbox: dict[str, Any]) -> None:
    spec = prod_spec()
    node = spec.workers[0]
    root: Path = sandbox["root"]
    (root / "etc/docker").mkdir(parents=True)
    (root / "etc/fstab").write_text("UUID=abc / ext4 defaults 0 1\nold:/export /mnt/docker nfs defaults 0 0\n")
    theirs = '{"hosts": ["unix:///var/run/docker.sock", "tcp://0.0.0.0:2375"], "storage-driver": "devicemapper"}\n'
    (root / "etc/docker/daemon.json").write_text(theirs)
    profile = ci.docker_host_profile(spec, node, vm=False)
    env = ci.bootstrap_environment(spec, profile)

    out, calls = _converge(sandbox, env)
    assert out.startswith("changed: ")
    for f in profile.files:
        assert (root / f.path.lstrip("/")).read_text() == f.content
    assert (root / "etc/fstab").read_text() == (
        "UUID=abc / ext4 defaults 0 1\n"
        "10.20.0.250:/export/docker /mnt/docker nfs nfsvers=4.1,_netdev,nofail,noatime 0 0\n"
    )
    assert (root / ci.READY_MARKER.lstrip("/")).read_text().strip() == profile.digest()
    assert (root / "etc/docker/daemon.json.before-swarm-estate").read_text() == theirs
    assert any(c.startswith("apt-get install") and "docker.io" in c for c in calls)
    assert "usermod -aG docker ops" in calls and "mount " + str(root / "mnt/docker") in calls

    out, calls = _converge(sandbox, env)
    assert out == "changed: nothing"
    assert _acting(calls) == []

    # A model change converges just that: daemon.json rewritten, the engine restarted, nothing else.
    raw = estate_of("prod")
    raw["engine"]["log_driver"] = "json-file"
    changed = load_estate(raw)
    out, calls = _converge(sandbox, ci.bootstrap_environment(changed, ci.docker_host_profile(changed, node, vm=False)))
    assert out == "changed: /etc/docker/daemon.json restart:docker.service"
    assert _acting(calls) == ["systemctl restart docker.service"]


def test_bootstrap_on_an_offline_site_names_what_the_image_lacks_and_installs_nothing(sandbox: dict[str, Any]) -> None:
    raw = estate_of("prod")
    raw["base_image"]["offline"] = True
    spec = load_estate(raw)
    env = ci.bootstrap_environment(spec, ci.docker_host_profile(spec, spec.workers[0], vm=False))
    for pkg in ("nftables", "chrony", "docker.io"):  # the image has all but nfs-common
        (sandbox["state"] / "pkg" / pkg).touch()
    stdin = bootstrap_stdin({**env, "SE_ROOT": str(sandbox["root"])})
    run_env = {"PATH": f"{sandbox['stubs']}:/usr/bin:/bin", "STATE": str(sandbox["state"]), "HOME": "/tmp"}
    result = subprocess.run(["bash", "-s"], input=stdin, capture_output=True, text=True, env=run_env, timeout=60)
    assert result.returncode == 1
    assert "the image lacks nfs-common" in result.stderr and "base_image.offline" in result.stderr
    assert not any(c.startswith("apt-get") for c in (sandbox["state"] / "calls").read_text().splitlines())
    # it failed before changing anything: the next run does the whole bootstrap, restarts included
    assert not (sandbox["root"] / "etc/docker/daemon.json").exists()

    (sandbox["state"] / "pkg" / "nfs-common").touch()
    out, calls = _converge(sandbox, env)
    assert "/etc/docker/daemon.json" in out.split() and "start:docker.service" in out.split(), out
    assert not any(c.startswith("apt-get") for c in calls)


def test_bootstrap_reloads_haproxy_gracefully_when_the_l4_config_changes(sandbox: dict[str, Any]) -> None:
    spec = prod_spec()
    env = ci.bootstrap_environment(spec, l4_profile(spec, 0, vm=False))
    _converge(sandbox, env)
    keepalived = sandbox["root"] / "etc/keepalived/keepalived.conf"
    assert oct(keepalived.stat().st_mode & 0o777) == "0o600"
    raw = estate_of("prod")
    raw["swarm"]["workers"]["nodes"].append({"name": "docker-swarm4", "labels": ["l7=true"]})
    changed = load_estate(raw)
    out, calls = _converge(sandbox, ci.bootstrap_environment(changed, l4_profile(changed, 0, vm=False)))
    assert out == "changed: /etc/haproxy/haproxy.cfg reload:haproxy.service"
    assert _acting(calls) == ["systemctl reload-or-restart haproxy.service"]


def test_bootstrap_waits_for_cloud_init_but_not_forever(sandbox: dict[str, Any]) -> None:
    spec = prod_spec()
    env = ci.bootstrap_environment(spec, ci.docker_host_profile(spec, spec.nodes[0]))
    stdin = bootstrap_stdin({**env, "SE_ROOT": str(sandbox["root"])}, wait_seconds=0)
    run_env = {**os.environ, "PATH": f"{sandbox['stubs']}:/usr/bin:/bin", "STATE": str(sandbox["state"])}
    result = subprocess.run(["bash", "-s"], input=stdin, capture_output=True, text=True, env=run_env, timeout=30)
    assert result.returncode == 1
    assert "cloud-init did not write" in result.stderr
    assert not (sandbox["root"] / "etc").exists()  # it acted on nothing


def _install_secrets(sandbox: dict[str, Any], files: list[HostFile]) -> tuple[str, list[str]]:
    calls = sandbox["state"] / "calls"
    calls.unlink(missing_ok=True)
    script = SECRET_FILES_SCRIPT.read_text()
    run_env = {"PATH": f"{sandbox['stubs']}:/usr/bin:/bin", "STATE": str(sandbox["state"]), "HOME": "/tmp"}
    result = subprocess.run(
        ["sh", "-c", script, "secret-files.sh", *SECRET_UNITS],
        input=secret_files_stdin(files), capture_output=True, text=True, env=run_env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stderr, calls.read_text().splitlines() if calls.exists() else []


def test_secret_files_install_once_reload_on_change_and_never_print_the_secret(sandbox: dict[str, Any]) -> None:
    target = sandbox["root"] / "etc/keepalived/vrrp-auth.conf"
    (auth,) = l4_secret_files("s3cretPw")
    files = [HostFile(str(target), auth.content, auth.permissions)]
    (sandbox["state"] / "active" / "keepalived.service").touch()
    err, calls = _install_secrets(sandbox, files)
    assert target.read_text() == "auth_pass s3cretPw\n" and oct(target.stat().st_mode & 0o777) == "0o600"
    assert "systemctl reload-or-restart keepalived.service" in calls
    assert "s3cretPw" not in err
    err, calls = _install_secrets(sandbox, files)  # twice changes nothing
    assert "nothing changed" in err and not [c for c in calls if "reload" in c]
    (auth,) = l4_secret_files("n3wPassw")
    err, calls = _install_secrets(sandbox, [HostFile(str(target), auth.content, auth.permissions)])
    assert target.read_text() == "auth_pass n3wPassw\n" and "systemctl reload-or-restart keepalived.service" in calls
    (sandbox["state"] / "active" / "keepalived.service").unlink()  # a stopped unit is not started by a new secret
    (auth,) = l4_secret_files("th1rdPwd")
    _, calls = _install_secrets(sandbox, [HostFile(str(target), auth.content, auth.permissions)])
    assert not [c for c in calls if "reload" in c]


def test_domain_type_is_kvm_unless_a_hypervisor_emulates() -> None:
    """Where KVM is unusable (nested virtualisation) a hypervisor runs its VMs under software emulation: libvirt
    domain type qemu, and no host CPU to pass through."""
    raw = estate_of("prod")
    raw["hypervisors"][1]["domain_type"] = "qemu"
    result, _ = synth_hosts(raw)
    emulated = raw["hypervisors"][1]["name"]
    for r in result.by_type(DOMAIN):
        on = r["provider"].removeprefix("x-site-")
        want = ("qemu", None) if on == emulated else ("kvm", {"mode": "host-passthrough"})
        assert (r["inputs"]["type"], r["inputs"].get("cpu")) == want, r["inputs"]["name"]
    assert any(r["provider"].removeprefix("x-site-") == emulated for r in result.by_type(DOMAIN))
