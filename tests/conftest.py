"""Shared fixtures: the example stack configs and the mock-engine synth."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.synth import RecordingMonitor, SynthResult, run_program, stack_config

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("DOCKER_API_VERSION", "1.41")

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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: real engines or real traffic; run by .ci/run, skip with -m 'not slow'")


def estate_of(stack: str) -> dict[str, Any]:
    return copy.deepcopy(stack_config(ROOT / f"Pulumi.{stack}.yaml")["swarm-estate:estate"])


@pytest.fixture
def prod_estate() -> dict[str, Any]:
    """A fresh, mutable copy of the prod estate config."""
    return estate_of("prod")


@pytest.fixture
def dev_estate() -> dict[str, Any]:
    return estate_of("dev")


def config_for(estate: dict[str, Any], secrets: dict[str, str] | None = None) -> dict[str, Any]:
    return {"swarm-estate:estate": estate, **(TEST_SECRETS if secrets is None else secrets)}


@pytest.fixture
def synth() -> Callable[..., SynthResult]:
    """Run the whole program for an estate dict under the mock engine."""

    def run(estate: dict[str, Any], monitor: RecordingMonitor | None = None, stack: str = "test") -> SynthResult:
        return run_program(config_for(estate), stack=stack, monitor=monitor)

    return run


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
