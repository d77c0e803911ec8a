"""Helpers shared by the hosts-layer tests: estate variants, real tools, free loopback ports."""

from __future__ import annotations

import copy
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import yaml

from components.config_secrets import SecretSource
from components.estate import MachineLayer, machine_layer
from components.model import EstateSpec, load_estate
from tests.tls_support import self_signed
from tools.synth import SynthResult, run_function

ROOT = Path(__file__).resolve().parent.parent


def prod_raw() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]["swarm-estate:estate"])


def spec_of(raw: dict[str, Any]) -> EstateSpec:
    return load_estate(raw)


def prod_spec() -> EstateSpec:
    return spec_of(prod_raw())


def tool(name: str) -> str:
    """The path of a real validator; a missing tool fails the test (CI installs it), never skips."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    assert path, f"{name} is not installed: apt-get install it (.ci/run does)"
    return path


def run_tool(
    args: list[str], timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False, env=env)


def variant(
    *,
    managers: int = 3,
    workers: int = 5,
    hypervisors: int = 3,
    nfs: bool = True,
    registry: str = "ca",
    l4: bool = True,
    substrate: str = "libvirt",
) -> dict[str, Any]:
    """The prod estate reshaped: node counts, hypervisors, NFS on/off, registry trust mode."""
    raw = prod_raw()
    raw["substrate"] = substrate
    raw["hypervisors"] = [
        {"name": f"kvm{i + 1}", "uri": f"qemu+ssh://root@kvm{i + 1}.example.org/system", "pool": "vmstore"}
        for i in range(hypervisors)
    ]
    raw["swarm"]["managers"]["count"] = managers
    raw["swarm"]["workers"]["count"] = workers
    l7_count = min(3, workers)
    raw["swarm"]["workers"]["nodes"] = raw["swarm"]["workers"]["nodes"][:l7_count]
    raw["l7"]["replicas"] = max(1, l7_count)
    if l7_count == 0:
        raw["l7"]["node_label"] = {"l7": "true"}
        raw["swarm"]["managers"]["labels"] = ["l7=true"]
        raw["l7"]["replicas"] = 1
    if not nfs:
        raw["nfs"] = {}
        registry_off: dict[str, Any] = {"enabled": False}
        raw["registry"] = registry_off
        raw["portainer"]["nfs"] = None
        for stack in raw["stacks"].values():
            stack.pop("volumes", None)
    if registry == "insecure" and raw.get("registry", {}).get("enabled"):
        raw["registry"]["insecure"] = True
    elif registry == "ca" and raw.get("registry", {}).get("enabled"):
        raw["registry"]["ca_certificate"] = TEST_CA
    raw["l4"]["enabled"] = l4
    if substrate == "existing":
        raw.pop("hypervisors")
        for role in ("managers", "workers"):
            group = raw["swarm"][role]
            prefix = group["name_prefix"]
            named = {n["name"]: n for n in group.get("nodes", [])}
            base = 10 if role == "managers" else 20
            group["nodes"] = [
                {**named.get(f"{prefix}{i + 1}", {}), "name": f"{prefix}{i + 1}", "address": f"10.20.0.{base + i}"}
                for i in range(group["count"])
            ]
    return raw


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_port_on(hosts: list[str]) -> int:
    """A port that is free on every one of these loopback addresses."""
    for _ in range(50):
        port = free_port(hosts[0])
        try:
            for host in hosts[1:]:
                with socket.socket() as s:
                    s.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no common free port on {hosts}")


def throwaway_ca_pem() -> str:
    """A freshly generated self-signed CA certificate (never trusted anywhere)."""
    return self_signed("swarm-estate test CA", ca=True)[0].decode()


TEST_CA = throwaway_ca_pem()


# Known stand-ins for the secrets the prod estate names, so tests can prove they never leak.
SECRETS = {
    "swarm-estate:sshPrivateKey": (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nHOSTSTESTKEY0001\n-----END OPENSSH PRIVATE KEY-----\n"
    ),
    "swarm-estate:vrrpPassword": "vrrpT3st",
    "swarm-estate:registryHtpasswd": "registry:$2y$05$HOSTSTESTHTPASSWD",
    "swarm-estate:tlsWildcardPem": "-----BEGIN CERTIFICATE-----\nHOSTSTESTCERT\n-----END CERTIFICATE-----\n",
}


def synth_hosts(raw: dict[str, Any]) -> tuple[SynthResult, MachineLayer]:
    """Register only the machine layer of this estate (the Estate's: site, hosts, L4 pair) under the recording
    mock engine, named as the estate `x` would name them."""
    built: list[MachineLayer] = []

    def program() -> MachineLayer:
        built.append(machine_layer("x", load_estate(raw), SecretSource(), None))
        return built[0]

    result = run_function(program, dict(SECRETS))
    return result, built[0]
