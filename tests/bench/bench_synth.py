"""Synth speed on the mock engine, next to bare SDK registration of the same resources.

    venv/bin/python -m tests.bench.bench_synth [--sizes 10,100,1000]

The ratio (program synth / bare registration) is the figure: it is what the model,
the renderers and the components cost on top of what the SDK itself costs.
Run on demand; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pulumi
import yaml

from tests.harness.project import config_for, estate_of
from tools.synth import SynthResult, run_function, run_program


def generated_estate(services: int, workdir: Path) -> dict[str, Any]:
    """The prod estate plus one stack of `services` routed web services (one compose file)."""
    estate = copy.deepcopy(estate_of("prod"))
    compose = {
        "services": {
            f"app{i}": {
                "image": f"registry.example.org/app{i}:1.0",
                "networks": ["haproxy-public"],
                "deploy": {"replicas": 2, "endpoint_mode": "dnsrr"},
            }
            for i in range(services)
        },
        "networks": {"haproxy-public": {"external": True}},
    }
    path = workdir / f"bench-{services}.yml"
    path.write_text(yaml.safe_dump(compose))
    estate["stacks"]["bench"] = {
        "compose": str(path),
        "services": {
            f"app{i}": {"dns_names": [f"app{i}.d4science.org"], "http_port": 8080, "check_uri": "/health"}
            for i in range(services)
        },
    }
    return estate


def bare_registration(result: SynthResult) -> None:
    """Register the same resources again with no program logic: plain SDK resource objects."""
    by_name: dict[str, pulumi.Resource] = {}

    def program() -> None:
        for r in result.resources:
            parent = by_name.get(r["parent"]) if r["parent"] else None
            opts = pulumi.ResourceOptions(parent=parent)
            if r["custom"]:
                by_name[r["name"]] = pulumi.CustomResource(r["type"], r["name"], dict(r["inputs"]), opts)
            else:
                by_name[r["name"]] = pulumi.ComponentResource(r["type"], r["name"], None, opts)

    run_function(program)


def timed(fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10,100,1000", help="generated estates: services per estate")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases: list[tuple[str, dict[str, Any]]] = [("prod", estate_of("prod"))]
        cases += [(f"{n} services", generated_estate(int(n), Path(tmp))) for n in args.sizes.split(",")]
        for label, estate in cases:
            config = config_for(estate)
            result = run_program(config)
            synth_s = timed(lambda config=config: run_program(config), args.repeat)
            bare_s = timed(lambda result=result: bare_registration(result), args.repeat)
            rows.append((label, len(result.resources), synth_s, bare_s))
    print(f"{'estate':<16}{'resources':>10}{'synth s':>10}{'bare SDK s':>12}{'ratio':>8}")
    for label, count, synth_s, bare_s in rows:
        print(f"{label:<16}{count:>10}{synth_s:>10.3f}{bare_s:>12.3f}{synth_s / bare_s:>8.2f}")
    print()
    print(f"{'estate':<16}{'resources':>10}{'critical path':>15}")
    for workers in (5, 50):
        estate = estate_of("prod")
        estate["swarm"]["workers"]["count"] = workers
        result = run_program(config_for(estate))
        print(f"{f'3m+{workers}w':<16}{len(result.resources):>10}{result.critical_path():>15}")


if __name__ == "__main__":
    main()
