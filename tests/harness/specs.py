"""Estate variants, one layer synthesised under the mock engine (hosts, stacks), the real validators,
free loopback ports."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pulumi
import pulumi_docker as docker

from components.compose.apply import import_stacks
from components.config_secrets import SecretSource
from components.estate import MachineLayer, machine_layer
from components.model import load_estate
from components.platform_stacks import platform_stacks
from components.stacks import AppStack, AppStackArgs
from tests.harness.project import ROOT, TEST_SECRETS, config_for, estate_of
from tests.harness.tls import self_signed
from tools.synth import RecordingMonitor, SynthResult, run_function


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
    raw = estate_of("prod")
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


def throwaway_ca_pem() -> str:
    """A freshly generated self-signed CA certificate (never trusted anywhere)."""
    return self_signed("swarm-estate test CA", ca=True)[0].decode()


TEST_CA = throwaway_ca_pem()


def synth_hosts(raw: dict[str, Any]) -> tuple[SynthResult, MachineLayer]:
    """Register only the machine layer of this estate (the Estate's: site, hosts, L4 pair) under the recording
    mock engine, named as the estate `x` would name them."""
    built: list[MachineLayer] = []

    def program() -> MachineLayer:
        built.append(machine_layer("x", load_estate(raw), SecretSource(), None))
        return built[0]

    result = run_function(program, dict(TEST_SECRETS))
    return result, built[0]


def synth_stacks(
    raw: dict[str, Any],
    project: Path = ROOT,
    secrets: dict[str, str] | None = None,
    monitor: RecordingMonitor | None = None,
) -> SynthResult:
    """Import the stacks and register one AppStack per stack, as the Estate does, under the recording mock engine."""
    spec = load_estate(raw)
    imported = {**import_stacks(spec, project), **platform_stacks(spec)}

    def program() -> list[AppStack]:
        provider = docker.Provider("docker", host="unix:///var/run/docker.sock")
        child = pulumi.ResourceOptions(provider=provider)
        public = docker.Network("public", name=spec.public_network.name, driver="overlay", opts=child)
        shared = {
            spec.public_network.name: public,
            **{
                o.name: docker.Network(f"overlay-{o.name}", name=o.name, driver="overlay", opts=child)
                for o in spec.overlays
            },
        }
        return [
            AppStack(name, AppStackArgs(stack, provider, shared, SecretSource())) for name, stack in imported.items()
        ]

    return run_function(program, config_for(raw, secrets), monitor=monitor)
