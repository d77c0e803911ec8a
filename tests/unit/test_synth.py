"""The offline synth: what it writes, that it is deterministic, and that it keeps secrets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import schema
from tests.harness.project import ROOT, TEST_SECRETS, config_for, estate_of
from tools.synth import SECRET, run_program, secure, stack_config

STACKS = ("prod", "dev")


def synth_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.synth", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("stack", STACKS)
def test_cli_writes_resources_outputs_and_files(stack, tmp_path):
    out = tmp_path / stack
    proc = synth_cli(stack, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    resources = json.loads((out / "resources.json").read_text())
    outputs = json.loads((out / "outputs.json").read_text())
    assert any(r["type"] == "swarm-estate:estate:Estate" for r in resources)
    for r in resources:
        assert set(r) == {"type", "name", "parent", "provider", "custom", "inputs", "dependencies", "options"}
        assert set(r["options"]) == {
            "protect",
            "deleteBeforeReplace",
            "retainOnDelete",
            "ignoreChanges",
            "replaceOnChanges",
        }
    assert outputs["manager_addresses"]
    assert (out / "files" / "estate.mmd").read_text().startswith("flowchart")
    assert f"{len(resources)} resources" in proc.stdout


def test_synth_is_deterministic(tmp_path):
    for run in ("a", "b"):
        assert synth_cli("prod", "--out", str(tmp_path / run)).returncode == 0
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_bad_config_exits_2_with_path_and_writes_nothing(tmp_path):
    bad = tmp_path / "Pulumi.bad.yaml"
    text = (
        (ROOT / "Pulumi.prod.yaml")
        .read_text()
        .replace("count: 3\n        name_prefix: docker-swarm-mgr", "count: 2\n        name_prefix: docker-swarm-mgr")
    )
    assert text != (ROOT / "Pulumi.prod.yaml").read_text()
    bad.write_text(text)
    out = tmp_path / "out"
    proc = synth_cli("bad", "--config", str(bad), "--out", str(out))
    assert proc.returncode == 2
    assert "swarm-estate:estate.swarm.managers: 2 managers cannot tolerate any failure" in proc.stderr
    assert not out.exists()
    assert "Traceback" not in proc.stderr


def test_missing_stack_file_exits_2(tmp_path):
    proc = synth_cli("nosuchstack", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_secure_values_are_unknown_secrets_and_never_written(tmp_path):
    config = stack_config(ROOT / "Pulumi.prod.yaml")
    ciphertexts = [v for k, v in config.items() if k != "swarm-estate:estate"]
    assert ciphertexts, "the prod stack file declares secure: values"
    result = run_program(config, stack="prod")
    text = json.dumps(result.resources) + json.dumps(result.outputs) + "".join(result.files.values())
    for c in ciphertexts:
        assert c not in text


@pytest.mark.parametrize("stack", STACKS)
def test_known_secrets_never_appear_in_synth_output(stack):
    result = run_program(config_for(estate_of(stack)), stack=stack)
    text = json.dumps(result.resources) + json.dumps(result.outputs) + "".join(result.files.values())
    for value in TEST_SECRETS.values():
        for line in value.splitlines():
            if len(line) > 8 and "-----" not in line:
                assert line not in text


def test_secure_helper_marks_values_unknown():
    config = config_for(estate_of("dev"), secrets={"swarm-estate:unused": secure("AAAA")})
    result = run_program(config)
    assert "AAAA" not in json.dumps(result.resources)


@pytest.mark.skipif(not schema.available(), reason="../shared/provider-schemas is absent (a user's clone)")
@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_matches_its_provider_schema(stack):
    result = run_program(config_for(estate_of(stack)), stack=stack)
    problems = [p for r in result.resources for p in schema.problems(r)]
    assert problems == []


@pytest.mark.skipif(not schema.available(), reason="../shared/provider-schemas is absent (a user's clone)")
def test_schema_check_catches_bad_inputs():
    bad = {
        "type": "docker:index/service:Service",
        "name": "x",
        "inputs": {"nmae": "x", "taskSpec": {"containerSpec": {"image": 5}}},
    }
    found = schema.problems(bad)
    assert any(".nmae: unknown property" in p for p in found)
    assert any("image: expected a string" in p for p in found)
    missing = schema.problems({"type": "docker:index/service:Service", "name": "y", "inputs": {}})
    assert any("taskSpec: required property missing" in p for p in missing)


def test_mermaid_shows_every_node_and_public_name():
    result = run_program(config_for(estate_of("prod")), stack="prod")
    picture = result.files["estate.mmd"]
    from components.model import load_estate

    spec = load_estate(estate_of("prod"))
    for node in spec.nodes:
        assert f'["{node.name}<br/>{node.role} · {node.address}' in picture
    for stack in spec.stacks.values():
        for routing in stack.services.values():
            for dns in routing.dns_names:
                assert dns in picture
    assert "VIP 10.20.0.5" in picture


def upload_edges(result) -> frozenset[tuple[str, str]]:
    """The edges that make uploads to one hypervisor go one after another (go-libvirt hangs on two at once)."""
    uploads = {r["name"] for r in result.resources
               if r["name"].endswith("-base") or r["type"] == "libvirt:index/cloudInitDisk:CloudInitDisk"}
    return frozenset((r["name"], d) for r in result.resources if r["name"] in uploads for d in r["dependencies"]
                     if d in uploads)


def test_whole_estate_critical_path_grows_with_the_worker_count_only_by_the_uploads(prod_estate, synth):
    lengths, without_upload_chain = [], []
    for workers in (5, 50):
        prod_estate["swarm"]["workers"]["count"] = workers
        result = synth(prod_estate)
        lengths.append(result.critical_path())
        without_upload_chain.append(result.critical_path(skip=upload_edges(result)))
    assert without_upload_chain[0] == without_upload_chain[1] == lengths[0]
    # the price of one upload at a time: at most one step per added node on one hypervisor (45 over 3)
    assert lengths[0] < lengths[1] <= lengths[0] + 15, lengths


# Inputs that may be a Pulumi secret as a whole: the secret itself (a swarm secret's data, the stdin that carries
# a join token or a host's secret files) and the command provider's `connection`, which its SDK always makes
# secret (it holds the private key). Anything else hidden would be readable text hidden by one secret inside.
WHOLLY_SECRET = {
    ("docker:index/secret:Secret", "data"),
    ("command:remote:Command", "connection"),
    ("command:remote:Command", "stdin"),
    ("command:local:Command", "stdin"),
}


@pytest.mark.parametrize("stack", STACKS)
def test_a_reviewer_reads_every_script_and_file_and_no_secret(stack):
    result = run_program(config_for(estate_of(stack)), stack=stack)
    hidden = {(r["type"], k) for r in result.resources for k, v in (r["inputs"] or {}).items() if v == SECRET}
    assert hidden <= WHOLLY_SECRET, hidden - WHOLLY_SECRET
    for r in result.resources:
        inputs = r["inputs"] or {}
        if inputs.get("stdin") == SECRET:
            assert r["name"].endswith(("-join", "-secret-files")), r["name"]
        if r["type"].startswith("command:"):
            assert inputs.get("create") not in (None, SECRET), r["name"]  # the script, readable
    dump = json.dumps(result.resources) + json.dumps(result.outputs) + json.dumps(result.files)
    for key, value in TEST_SECRETS.items():
        assert value not in dump, key


def test_the_cli_exits_without_a_stray_traceback(tmp_path):
    """The SDK's event loop is closed before the interpreter exits: none of several runs prints
    `Exception ignored in: BaseEventLoop.__del__` (it used to, about one run in ten)."""
    for run in range(8):
        proc = synth_cli("dev", "--out", str(tmp_path / str(run)))
        assert proc.returncode == 0, proc.stderr
        assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
