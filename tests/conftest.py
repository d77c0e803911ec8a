"""Shared fixtures: the example stack configs and the mock-engine synth (helpers live in tests/harness/)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness.project import config_for, estate_of
from tools.synth import RecordingMonitor, SynthResult, run_program

os.environ.setdefault("DOCKER_API_VERSION", "1.41")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: real engines or real traffic; run by .ci/run, skip with -m 'not slow'")
    config.addinivalue_line("markers", "libvirt: VMs on a libvirtd of its own (minutes); run alone with -m libvirt")


@pytest.fixture
def prod_estate() -> dict[str, Any]:
    """A fresh, mutable copy of the prod estate config."""
    return estate_of("prod")


@pytest.fixture
def dev_estate() -> dict[str, Any]:
    return estate_of("dev")


@pytest.fixture
def synth() -> Callable[..., SynthResult]:
    """Run the whole program for an estate dict under the mock engine."""

    def run(estate: dict[str, Any], monitor: RecordingMonitor | None = None, stack: str = "test") -> SynthResult:
        return run_program(config_for(estate), stack=stack, monitor=monitor)

    return run


