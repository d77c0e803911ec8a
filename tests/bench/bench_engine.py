"""The real Pulumi engine's figures: the dev estate from empty to every L7 backend UP, no-change preview and up,
and estates of many services on one manager, each beside what plain `docker service create`/`inspect` take.

    venv/bin/python -m tests.bench.bench_engine [--sizes 10,100,1000] [--skip-dev]

Everything runs on isolated engines this script starts (tests/harness), with the toolchain of `tools/toolchain`.
Run on demand; nothing here is asserted. Times are wall-clock on whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tests.harness import Engine, free_subnet
from tests.harness.estates import LocalImages, local_dev
from tests.harness.probe import Rotation, Swarm
from tests.harness.project import estate_of
from tests.harness.pulumi import PulumiStack, phases
from tests.harness.wait import wait_until

Row = tuple[str, str, str]


def timed(action: Any) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


DEV_PHASES = {
    "node containers": r"-nodes-(manager|worker)\d+$",
    "engines answering": r"-nodes-\w+-ready$",
    "images in nodes": r"-nodes-\w+-images$",
    "swarm formed": r"-swarm-\w+-membership$",
    "L7 service": r"-l7-service$",
    "demo service": r"-stack-demo-web$",
}


def dev_figures(work: Path) -> list[Row]:
    engine = Engine.start()
    try:
        images = LocalImages.build(engine)
        estate = local_dev(engine, images, free_subnet())
        stack = PulumiStack.create(work / "dev", "dev", {"swarm-estate:estate": estate})
        log = work / "dev-up.jsonl"
        started = time.time()
        stack.up("--event-log", str(log))
        up_s = time.time() - started
        swarm = Swarm.in_containers(engine, "dev-manager1", lambda n: f"dev-{n}")
        rotation = Rotation(swarm, ["worker1", "worker2"], "demo_web")
        backends_at = rotation.wait(lambda c: all(v == 2 for v in c.values()), 300, "both replicas UP on both L7s")
        rows: list[Row] = [("dev", "pulumi up from empty", f"{up_s:.1f} s"),
                           ("dev", "up from empty to every L7 backend UP", f"{backends_at - started:.1f} s")]
        rows += [("dev", f"  ... {kind} done", f"{t:.1f} s") for kind, t in phases(log, started, DEV_PHASES).items()]
        rows.append(("dev", "no-change preview", f"{timed(lambda: stack.preview(expect_no_changes=True)):.1f} s"))
        rows.append(("dev", "no-change up", f"{timed(stack.up):.1f} s"))
        rows.append(("dev", "destroy", f"{timed(stack.destroy):.1f} s"))
        return rows
    finally:
        engine.stop()


def many_services_estate(engine: Engine, images: LocalImages, services: int, work: Path) -> dict[str, Any]:
    """One manager (which also carries the L7), one stack of `services` unrouted services: replicas 0 (a swarm
    object, no task) except the first, which runs one task."""
    estate = local_dev(engine, images, free_subnet(), estate_of("dev"))
    estate["name"] = "bench"
    estate["swarm"]["managers"] = {"count": 1, "labels": ["l7=true"]}
    estate["swarm"]["workers"] = {"count": 0}
    estate["l7"]["replicas"] = 1
    compose = {"services": {
        f"s{i}": {"image": images.app_id, "deploy": {"replicas": 1 if i == 0 else 0}} for i in range(services)
    }}
    path = work / f"many-{services}" / "docker-compose.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(compose))
    estate["stacks"] = {"many": {"compose": str(path)}}
    return estate


def floor(swarm: Swarm, image: str, services: int) -> tuple[float, float]:
    """The same services made and read with the docker CLI, one command each: (create s, inspect s)."""
    create = timed(lambda: [swarm.docker("service", "create", "--detach", "--quiet", "--replicas", "0", "--name",
                                         f"floor_s{i}", image) for i in range(services)])
    inspect = timed(lambda: [swarm.docker("service", "inspect", f"floor_s{i}") for i in range(services)])
    for start in range(0, services, 100):
        swarm.docker("service", "rm", *[f"floor_s{i}" for i in range(start, min(services, start + 100))])
    return create, inspect


def size_figures(services: int, work: Path) -> list[Row]:
    engine = Engine.start()
    label = f"{services} services"
    try:
        images = LocalImages.build(engine)
        estate = many_services_estate(engine, images, services, work)
        stack = PulumiStack.create(work / f"stack-{services}", "bench", {"swarm-estate:estate": estate})
        up_s = timed(stack.up)
        total = len(stack.resources())
        swarm = Swarm.in_containers(engine, "bench-manager1", lambda n: f"bench-{n}")
        wait_until(lambda: len(swarm.services()) >= services + 1, 300, f"{services} services listed")
        preview_s = timed(lambda: stack.preview(expect_no_changes=True))
        changed = copy.deepcopy(estate)
        compose_path = Path(changed["stacks"]["many"]["compose"])
        compose = yaml.safe_load(compose_path.read_text())
        compose["services"]["s0"]["environment"] = {"BENCH": "changed"}
        compose_path.write_text(yaml.safe_dump(compose))
        plan = stack.preview()
        touched = plan.changed()
        change_s = timed(stack.up)
        create_s, inspect_s = floor(swarm, images.app_id, services)
        stack.destroy()
        return [
            (label, f"pulumi up from empty ({total} resources)", f"{up_s:.1f} s"),
            (label, "no-change preview", f"{preview_s:.1f} s"),
            (label, "one service changed: resources the engine touches",
             f"{len(touched)} ({', '.join(sorted(s.name for s in touched))})"),
            (label, "one service changed: pulumi up", f"{change_s:.1f} s"),
            (label, f"floor: docker service create x{services}", f"{create_s:.1f} s"),
            (label, f"floor: docker service inspect x{services}", f"{inspect_s:.1f} s"),
        ]
    finally:
        engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000", help="services per estate on one manager")
    parser.add_argument("--skip-dev", action="store_true", help="only the many-services estates")
    args = parser.parse_args()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        work = Path(tmp)
        if not args.skip_dev:
            rows += dev_figures(work)
        for size in (int(n) for n in args.sizes.split(",") if n):
            rows += size_figures(size, work)
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    print(f"{'estate':<{width[0]}}  {'figure':<{width[1]}}  value")
    for estate, figure, value in rows:
        print(f"{estate:<{width[0]}}  {figure:<{width[1]}}  {value}")


if __name__ == "__main__":
    main()
