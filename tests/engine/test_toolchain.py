"""The toolchain of `tools/toolchain`: every binary answers with the versions requirements.txt pins, a second run
builds nothing, and the stand-ins serve the published package schemas the SDKs were generated from (read from
../shared/provider-schemas where present; skipped cleanly where not).

The differences each stand-in is allowed are listed here, each with its reason, so any other drift fails.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness import schema
from tests.harness.pulumi import ROOT, cli_env, toolchain_bin

pytestmark = pytest.mark.slow

SCHEMAS = ROOT.parent / "shared" / "provider-schemas"
needs_schemas = pytest.mark.skipif(not schema.available(), reason="../shared/provider-schemas not present")

# What kreuzwerker/terraform-provider-docker added after the release pulumi-docker 5.x was generated from, and
# pulumi-docker's own (non-bridged) `Image` resource with its types, which the stand-in does not have.
DOCKER_DIFFERENCES = {
    "docker:index/container:Container.deviceCgroupRules: only in the stand-in",
    "docker:index/container:Container.healthcheck: willReplaceOnChanges differs",
    "docker:index/ContainerUpload:ContainerUpload.group: only in the stand-in",
    "docker:index/ContainerUpload:ContainerUpload.owner: only in the stand-in",
    "docker:index/image:Image: only published",
    "docker:index/builderVersion:BuilderVersion: only published",
    "docker:index/cacheFrom:CacheFrom: only published",
    "docker:index/dockerBuild:DockerBuild: only published",
    "docker:index/registry:Registry: only published",
}
# pulumi-libvirt 0.5.4 bridges upstream v0.8.1, which the Go proxy does not serve; the stand-in bridges v0.8.3,
# whose one addition is a `private` (macvtap private mode) network interface. The bridge release the stand-ins
# use serves every provider's `terraformConfig` method, newer than the bridge pulumi-libvirt 0.5.4 was built with.
LIBVIRT_DIFFERENCES = {
    "libvirt:index/DomainNetworkInterface:DomainNetworkInterface.private: only in the stand-in",
    "pulumi:providers:libvirt/terraformConfig: only in the stand-in",
}
# pulumi-go-provider cannot put assets in a function's result.
COMMAND_DIFFERENCES = {
    "function command:local:run.outputs.archive: only published",
    "function command:local:run.outputs.assets: only published",
}


def requirement(name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==(\S+)", (ROOT / "requirements.txt").read_text(), flags=re.M)
    assert match, name
    return match.group(1)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The schema each stand-in provider serves to the engine (`pulumi package get-schema`)."""
    env = cli_env(tmp_path_factory.mktemp("schemas"))
    out = {}
    for name in ("docker", "command", "libvirt"):
        binary = toolchain_bin() / f"pulumi-resource-{name}"
        result = subprocess.run(["pulumi", "package", "get-schema", str(binary)], capture_output=True, text=True,
                                env=env, timeout=300, check=True)
        out[name] = json.loads(result.stdout)
    return out


def shape(prop: dict[str, Any]) -> dict[str, Any]:
    keys = ("type", "$ref", "items", "additionalProperties", "secret", "replaceOnChanges", "willReplaceOnChanges",
            "default", "enum")
    return {k: v for k, v in prop.items() if k in keys}


def differences(ours: dict[str, Any], theirs: dict[str, Any], kinds: tuple[str, ...]) -> set[str]:
    """Property-level differences of the resources and types (and `functions`, if asked) of two schemas."""
    found: set[str] = set()
    for kind in kinds:
        for token in set(ours.get(kind, {})) | set(theirs.get(kind, {})):
            a, b = ours.get(kind, {}).get(token), theirs.get(kind, {}).get(token)
            if a is None or b is None:
                found.add(f"{token}: only {'published' if a is None else 'in the stand-in'}")
                continue
            parts = [("", "inputProperties" if kind == "resources" else "properties")]
            if kind == "functions":
                parts = [(".inputs", "inputs"), (".outputs", "outputs")]
            for suffix, field in parts:
                pa = (a.get(field) or {}) if kind != "functions" else (a.get(field) or {}).get("properties", {})
                pb = (b.get(field) or {}) if kind != "functions" else (b.get(field) or {}).get("properties", {})
                where = f"function {token}{suffix}" if kind == "functions" else token
                for name in set(pa) | set(pb):
                    if name not in pa:
                        found.add(f"{where}.{name}: only published")
                    elif name not in pb:
                        found.add(f"{where}.{name}: only in the stand-in")
                    elif shape(pa[name]) != shape(pb[name]):
                        changed = sorted(k for k in set(shape(pa[name])) | set(shape(pb[name]))
                                         if shape(pa[name]).get(k) != shape(pb[name]).get(k))
                        found.add(f"{where}.{name}: {', '.join(changed)} differs")
            if kind == "resources" and sorted(a.get("requiredInputs", [])) != sorted(b.get("requiredInputs", [])):
                found.add(f"{token}: required inputs differ")
    return found


def test_the_binaries_report_the_pinned_versions(tmp_path: Path, served: dict[str, dict[str, Any]]) -> None:
    env = cli_env(tmp_path)
    version = subprocess.run(["pulumi", "version"], capture_output=True, text=True, env=env, check=True).stdout
    sdk = tuple(int(p) for p in requirement("pulumi").split("."))
    cli = tuple(int(p) for p in version.strip().lstrip("v").split("."))
    assert cli >= sdk, (cli, sdk)  # the SDK's release, or the nearest newer one the Go proxy serves
    assert served["docker"]["version"] == requirement("pulumi-docker")
    assert served["command"]["version"] == requirement("pulumi-command")
    assert served["libvirt"]["version"] == requirement("pulumi-libvirt")


def test_a_second_run_builds_nothing() -> None:
    toolchain_bin()
    check = subprocess.run(["bash", str(ROOT / "tools" / "toolchain"), "--check"], capture_output=True, timeout=60)
    assert check.returncode == 0


@needs_schemas
def test_the_docker_stand_in_serves_pulumi_dockers_schema(served: dict[str, dict[str, Any]]) -> None:
    published = json.loads((SCHEMAS / "docker-5.x.json").read_text())
    ours = served["docker"]
    assert differences(ours, published, ("resources", "types")) == DOCKER_DIFFERENCES
    assert sorted(ours["provider"]["inputProperties"]) == sorted(published["provider"]["inputProperties"])


@needs_schemas
def test_the_command_stand_in_serves_pulumi_commands_schema(served: dict[str, dict[str, Any]]) -> None:
    """Both Command resources, their four types and local:run. (CopyFile and CopyToRemote, which the program does
    not use, are not implemented.)"""
    published = json.loads((SCHEMAS / "command-1.2.1.json").read_text())
    ours = served["command"]
    published_resources = {k: v for k, v in published["resources"].items() if k.endswith(":Command")}
    modules = ("command:local:", "command:remote:")
    published_types = {k: v for k, v in published["types"].items() if k.startswith(modules)}
    trimmed = {**published, "resources": published_resources, "types": published_types}
    assert differences(ours, trimmed, ("resources", "types", "functions")) == COMMAND_DIFFERENCES


@needs_schemas
def test_the_libvirt_stand_in_serves_pulumi_libvirts_schema(served: dict[str, dict[str, Any]]) -> None:
    published = json.loads((SCHEMAS / "libvirt-0.5.4.json").read_text())
    ours = served["libvirt"]
    assert differences(ours, published, ("resources", "types", "functions")) == LIBVIRT_DIFFERENCES
    assert sorted(ours["config"]["variables"]) == sorted(published["config"]["variables"])
