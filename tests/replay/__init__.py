"""Replay: the program's resources performed for real on Docker engines, for the tests.

    from tests.replay import Replay

    replay = Replay.run(config)                 # run __main__.py; every registration is performed
    try:
        replay.outputs["l7_entrypoints"]        # the program's stack outputs
        replay.engine.created                   # what was made, in order, with real ids/outputs
        second = replay.update(new_config)      # the same program with a second config: service updates
    finally:
        errors = replay.teardown()              # reverse order, commands' deletes included

The replay is a test harness that answers Pulumi's mock interface by doing the work; it is not the
Pulumi engine and does not stand for `pulumi up`: no state, no diff, no preview, create path only.
`ReplayEngine` (engine.py) performs each registration; `mapping` turns docker provider inputs into
Engine API bodies and fails on any property it does not map; `images` builds the HAProxy and app
images offline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from components.synth import RecordingMonitor, SynthResult, run_program

from .api import DockerApi
from .engine import Created, Hook, ReplayEngine, leftovers
from .mapping import UnmappedPropertyError

__all__ = ["Created", "DockerApi", "Replay", "ReplayEngine", "ReplayError", "UnmappedPropertyError", "leftovers"]


@dataclass
class Replay:
    engine: ReplayEngine
    result: SynthResult | None
    error: BaseException | None = None

    @property
    def outputs(self) -> dict[str, Any]:
        assert self.result is not None, f"the replay failed: {self.error}"
        return self.result.outputs

    @classmethod
    def run(cls, config: dict[str, Any], stack: str = "replay", *, ssh_options: list[str] | None = None,
            on_created: Hook | None = None, previous: ReplayEngine | None = None, check: bool = True,
            skip: Callable[[str, str], bool] | None = None) -> Replay:
        """Run the program with `config`, performing every registration. With `check` (the default),
        a failed registration raises after the run, naming the first failures; teardown stays possible."""
        engine = ReplayEngine(ssh_options=list(ssh_options or []), on_created=on_created, previous=previous, skip=skip)
        replay = cls(engine=engine, result=None)
        monitor = RecordingMonitor(engine)
        try:
            replay.result = run_program(config, stack=stack, monitor=monitor)
        except Exception as exc:  # the program stops at the first failed registration, as `pulumi up` does
            replay.error = exc
        engine.dependencies = {request.name: _dependencies(request) for request in monitor.requests}
        if check and (replay.error is not None or engine.failures):
            detail = "; ".join(f"{f.typ} {f.name}: {f.error}" for f in engine.failures[:3]) or repr(replay.error)
            raise ReplayError(replay, f"replay of {stack} failed: {detail}")
        return replay

    def update(self, config: dict[str, Any], stack: str = "replay", **kwargs: Any) -> Replay:
        """Replay `config` over what this replay made: unchanged resources are reused, changed
        services updated in place, new content-named configs created next to the old ones."""
        return Replay.run(config, stack, ssh_options=self.engine.ssh_options, previous=self.engine, **kwargs)

    def teardown(self, run_command_deletes: bool = True) -> list[str]:
        try:
            return self.engine.teardown(run_command_deletes)
        finally:
            self.engine.close()


def _dependencies(request: Any) -> set[str]:
    urns = set(request.dependencies)
    for deps in request.propertyDependencies.values():
        urns.update(deps.urns)
    return {urn.rsplit("::", 1)[-1] for urn in urns}


class ReplayError(RuntimeError):
    def __init__(self, replay: Replay, message: str):
        super().__init__(message)
        self.replay = replay
