"""The project under test: where it is, its example stack configs, and known stand-ins for its secrets."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from components.model import EstateSpec, load_estate
from tools.synth import stack_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_CASES = ROOT / "tests" / "compose_cases"  # compose files, each with what `docker stack config` makes of it
COMPOSE_FIDELITY = ROOT / "tests" / "compose_fidelity"  # stack files in public stacks' shapes, with routing lines
FIDELITY_CASES = sorted(p.name for p in COMPOSE_FIDELITY.iterdir() if (p / "stack.yml").exists())
FIDELITY_SECRETS = {"swarm-estate:grafanaAdminPassword": "fidelity-grafana-admin"}  # the fixtures' secret keys

# Stand-ins for the secret config keys the example stacks name: known values, so tests can
# prove they never leak into synth output. (A real stack file holds `secure:` ciphertext.)
TEST_SECRETS = {
    "swarm-estate:sshPrivateKey": (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nTESTKEYMATERIAL0001\n-----END OPENSSH PRIVATE KEY-----\n"
    ),
    "swarm-estate:registryHtpasswd": "registry:$2y$05$TESTHTPASSWDHASH0002",
    "swarm-estate:tlsWildcardPem": "-----BEGIN CERTIFICATE-----\nTESTCERT0003\n-----END CERTIFICATE-----\n",
    "swarm-estate:vrrpPassword": "vrrpTEST0004",
}


def estate_of(stack: str) -> dict[str, Any]:
    """The `swarm-estate:estate` value of `Pulumi.<stack>.yaml`, as a fresh mutable dict."""
    return copy.deepcopy(stack_config(ROOT / f"Pulumi.{stack}.yaml")["swarm-estate:estate"])


def prod_spec() -> EstateSpec:
    return load_estate(estate_of("prod"))


def config_for(estate: dict[str, Any], secrets: dict[str, str] | None = None) -> dict[str, Any]:
    return {"swarm-estate:estate": estate, **(TEST_SECRETS if secrets is None else secrets)}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def fidelity_estate(case: str, folder: str) -> dict[str, Any]:
    """The dev estate with a fidelity fixture's stacks (and overlays) in place of its own; the fixture's folder is
    reached as `folder` from the project the estate runs in."""
    fixture = load_yaml(COMPOSE_FIDELITY / case / "stack.yml")
    raw = estate_of("dev")
    raw["stacks"] = {
        name: {**body, "compose": f"{folder}/{body['compose']}"} for name, body in fixture["stacks"].items()
    }
    raw["overlays"] = [*(raw.get("overlays") or []), *(fixture.get("overlays") or [])]
    return raw
