"""The dev estate replayed from empty to every L7 backend UP, timed.

    venv/bin/python -m tests.bench.bench_replay [--runs 1]

"Empty": an isolated engine with the images built (not timed: they are cached) and nothing else.
"UP": on every L7 HAProxy, every running replica of every routed service is a server in state UP
(read from HAProxy's Prometheus page on its stats frontend, inside the task). Prints the replay's
phases (when each kind of registration finished) and the total. Run on demand; nothing is asserted.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

from components.model import load_estate
from tests.harness import Engine, free_subnet
from tests.replay import Replay, ReplayError
from tests.replay.dev import dev_config, local_images, preload_hook
from tests.replay.probe import Swarm, server_states, wait_until

UP_TIMEOUT_S = 180


def one_run() -> dict[str, float]:
    engine = Engine.start()
    replay: Replay | None = None
    try:
        images = local_images(engine, engine.root / "work")
        config = dev_config(engine, images, str(free_subnet()))
        estate = config["swarm-estate:estate"]
        spec = load_estate(copy.deepcopy(estate))
        started = time.monotonic()
        try:
            replay = Replay.run(config, "dev", on_created=preload_hook(engine, images, estate))
        except ReplayError as failed:
            replay = failed.replay
            raise
        program_done = time.monotonic()
        swarm = Swarm(replay.engine.api(f"tcp://127.0.0.1:{estate['docker']['api_port']}"), engine)
        routed = [f"{stack}_{svc}" for stack, s in estate.get("stacks", {}).items() for svc in s["services"]]
        l7_nodes = [f"{spec.name}-{n.name}" for n in spec.l7_nodes()]

        def all_up() -> bool:
            for node in l7_nodes:
                states = server_states(swarm, node)
                for backend in routed:
                    replicas = len(swarm.running_tasks(backend))
                    up = [s for (b, _), s in states.items() if b == backend and s == "UP"]
                    if replicas == 0 or len(up) < replicas:
                        return False
            return True

        wait_until(all_up, UP_TIMEOUT_S, "every L7 backend UP on every L7 node", every=0.2)
        up = time.monotonic()
        phases: dict[str, float] = {}
        for record in replay.engine.created:
            kind = _phase(record.typ, record.name)
            phases[kind] = max(phases.get(kind, 0.0), record.finished - started)
        return {**phases, "program done": program_done - started, "all L7 backends UP": up - started}
    finally:
        if replay is not None:
            replay.teardown(run_command_deletes=False)
        engine.stop()


def _phase(typ: str, name: str) -> str:
    if typ == "docker:index/container:Container":
        return "node containers started"
    if name.endswith("-ready"):
        return "node engines answering (+ images loaded)"
    if name.endswith("-membership"):
        return "swarm formed and labelled"
    if typ == "docker:index/service:Service":
        return "services created (L7 converged)"
    return "other registrations"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    runs = [one_run() for _ in range(args.runs)]
    print(f"dev estate replay, {args.runs} run(s); seconds from empty (median, min, max)")
    for key in sorted(runs[0], key=lambda k: statistics.median(r[k] for r in runs)):
        values = [r[key] for r in runs]
        print(f"  {key:42s} {statistics.median(values):7.1f} {min(values):7.1f} {max(values):7.1f}")


if __name__ == "__main__":
    main()
