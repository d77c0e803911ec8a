"""Compose fidelity: what the program deploys from a stack file is what `docker stack deploy` would deploy from it.

For each fixture in tests/compose_fidelity/ (stack files in the shapes public Swarm stacks take, plus the stack
config lines a user adds), the whole program runs under the recording mock engine on the dev estate. Its
`docker.Service` inputs are compared, field by field, with `docker stack config -c` of the original file as
`docker stack deploy` converts it (tests/harness/deployed.py), and so is the rendered compose file the program
publishes. The only differences allowed are the routing changes the README documents:

- a service the L7 serves (by name or on a TCP port) is `dnsrr` and joins the public network (with its compose
  name as alias, as on every network);
- the ports the L7 serves (the HTTP port of a named route, each TCP route's port) are not published by the
  service; every other port it publishes stays published, in host mode;
- `replicas` from the stack config wins over the file's.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from components.model import load_estate
from tests.harness.compose import docker_stack_config
from tests.harness.deployed import from_docker, from_inputs
from tests.harness.project import (
    COMPOSE_FIDELITY,
    FIDELITY_CASES,
    FIDELITY_SECRETS,
    TEST_SECRETS,
    config_for,
    fidelity_estate,
)
from tests.harness.pulumi import project_copy
from tools.synth import SynthResult, run_program


def _synth(case: str, where: Path) -> tuple[dict[str, Any], SynthResult]:
    project = project_copy(where / "project")
    (project / "fixture").symlink_to(COMPOSE_FIDELITY / case)
    raw = fidelity_estate(case, "fixture")
    return raw, run_program(config_for(raw, {**TEST_SECRETS, **FIDELITY_SECRETS}), stack="dev", project_dir=project)


def _served_port(routing: dict[str, Any], ports: list[tuple]) -> int | None:
    if routing.get("http_port"):
        return routing["http_port"]
    targets = {p[0] for p in ports}
    return targets.pop() if len(targets) == 1 else None


def as_routed(expected: dict[str, dict[str, Any]], services: dict[str, Any], public: str) -> dict[str, dict[str, Any]]:
    """Docker's deployment with the README's routing changes applied (see the module's docstring)."""
    out = copy.deepcopy(expected)
    for name, routing in services.items():
        svc = out[name]
        if routing.get("replicas"):
            svc["replicas"] = routing["replicas"]
        tcp = {t["port"] for t in routing.get("tcp") or []}
        if not (routing.get("dns_names") or tcp):
            continue
        http = _served_port(routing, svc["ports"]) if routing.get("dns_names") else None
        svc["endpoint_mode"] = "dnsrr"
        svc["networks"][public] = [name]
        svc["ports"] = sorted(
            (target, published, protocol, "host")
            for target, published, protocol, _ in svc["ports"]
            if not (protocol == "tcp" and (target == http or target in tcp))
        )
    return out


@pytest.mark.parametrize("case", FIDELITY_CASES)
def test_the_program_deploys_what_docker_stack_deploy_would(case: str, tmp_path: Path):
    raw, result = _synth(case, tmp_path)
    spec = load_estate(raw)
    for stack, body in raw["stacks"].items():
        compose = (tmp_path / "project" / body["compose"]).resolve()
        rc, doc, stderr = docker_stack_config(compose, {k: str(v) for k, v in (body.get("variables") or {}).items()})
        assert rc == 0, stderr
        expected = as_routed(from_docker(doc, stack, spec.engine_log_driver), body.get("services") or {},
                             spec.public_network.name)  # fmt: skip
        deployed = from_inputs(result.resources, stack)
        assert sorted(deployed) == sorted(expected), stack
        for service in expected:
            for field, value in expected[service].items():
                assert deployed[service][field] == value, f"{stack}/{service}: {field}"


@pytest.mark.parametrize("case", FIDELITY_CASES)
def test_the_rendered_file_deploys_what_the_program_deploys(case: str, tmp_path: Path):
    """The published `files/stacks/<stack>/docker-compose.yml`, read by the real Docker CLI, describes the services
    the program registers: an operator can read (or `docker stack deploy`) exactly what runs."""
    raw, result = _synth(case, tmp_path)
    spec = load_estate(raw)
    for stack in raw["stacks"]:
        rendered = tmp_path / "rendered" / stack / "docker-compose.yml"
        rendered.parent.mkdir(parents=True)
        rendered.write_text(result.files[f"stacks/{stack}/docker-compose.yml"])
        rc, doc, stderr = docker_stack_config(rendered, {})
        assert rc == 0, stderr
        assert from_docker(doc, stack, spec.engine_log_driver) == from_inputs(result.resources, stack), stack
