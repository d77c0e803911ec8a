"""Faults and rollouts of the dev estate under the real Pulumi engine, in one table, with the mock-engine synth
figures (ratio to bare SDK registration, critical paths).

    venv/bin/python -m tests.bench.bench_engine_faults [--sizes 100,1000] [--repeat 3] [--no-engine]

The scenarios are the ones `tests/engine/test_engine_faults.py` asserts, run in the same order on one estate (3 managers
+ 2 workers, L7 on both workers, demo `web` with 2 replicas, brought up by `pulumi up`) under a loopback load of
25 req/s per stream. Run on demand; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from tests.bench.bench_synth import bare_registration, generated_estate, timed
from tests.engine.test_engine_faults import SCENARIOS, Estate, build_estate, destroy
from tests.harness.project import config_for, estate_of
from tools.synth import run_program

# (scenario, figure key in its result, label in the table, unit)
ROWS: list[tuple[str, str, str, str]] = [
    ("replica loss", "failed requests", "failed requests", ""),
    ("replica loss", "time out of rotation s", "time out of rotation after the kill", "s"),
    ("replica loss", "time back in after running s", "replacement in rotation after running", "s"),
    ("app rolling update", "failed requests", "failed requests", ""),
    ("app rolling update", "rollout s", "rollout time (pulumi up included)", "s"),
    ("L7 config change", "unavailable s per node", "unavailability window per node (no L4)", "s"),
    ("L7 config change", "failed without retry", "failed requests without client retry", ""),
    ("L7 config change", "answered by the other L7 on retry", "answered by the other L7 on client retry", ""),
    ("L7 config change", "failed with retry", "failed requests with client retry", ""),
    ("L7 config change", "rollout s", "L7 rollout time", "s"),
    ("worker removal", "failed requests", "failed requests", ""),
    ("worker removal", "removal s", "pulumi up: drain + leave + rm + container removal", "s"),
    ("manager loss", "failed requests", "failed requests", ""),
    ("manager loss", "scale-up scheduled", "scale-up scheduled with a manager down", ""),
    ("manager loss", "rejoin s", "rejoin time (ready and reachable)", "s"),
    ("scale-out", "time to rotation after running s", "new replica in rotation after running (goal 5)", "s"),
]


def measured() -> dict[str, dict[str, Any]]:
    estate: Estate = build_estate(Path(tempfile.mkdtemp(prefix="bench-faults-")))
    figures: dict[str, dict[str, Any]] = {}
    try:
        for name, scenario in SCENARIOS:
            try:
                figures[name] = scenario(estate)
            except Exception as exc:  # a bench reports a failed scenario and goes on to the next
                figures[name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    finally:
        destroy(estate.engine, estate.stack)
    return figures


def synth_figures(sizes: list[int], repeat: int) -> list[tuple[str, str, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("prod", estate_of("prod"))] + [(f"{n} services", generated_estate(n, Path(tmp))) for n in sizes]
        for label, estate in cases:
            config = config_for(estate)
            result = run_program(config)
            synth_s = timed(lambda config=config: run_program(config), repeat)
            bare_s = timed(lambda result=result: bare_registration(result), repeat)
            rows.append((f"synth {label}", f"{len(result.resources)} resources: synth {synth_s:.3f} s, bare SDK "
                         f"{bare_s:.3f} s", f"ratio {synth_s / bare_s:.2f}"))
    paths = {}
    for workers in (5, 50):
        estate = estate_of("prod")
        estate["swarm"]["workers"]["count"] = workers
        paths[workers] = run_program(config_for(estate)).critical_path()
    rows.append(("critical path", f"3m+5w {paths[5]}, 3m+50w {paths[50]}",
                 "equal" if paths[5] == paths[50] else "NOT equal"))
    return rows


def _value(value: Any, unit: str) -> str:
    if isinstance(value, float):
        return f"{value:.2f} {unit}".strip()
    if isinstance(value, list):
        return ", ".join(_value(v, unit) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value} {unit}".strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="100,1000", help="generated estates: services per estate")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-engine", action="store_true", help="only the mock-engine figures")
    args = parser.parse_args()
    table: list[tuple[str, str, str]] = []
    if not args.no_engine:
        figures = measured()
        for scenario, key, label, unit in ROWS:
            got = figures.get(scenario, {})
            value = got.get(key, got.get("error", "not measured"))
            table.append((scenario, label, _value(value, unit)))
        for scenario, got in figures.items():
            if "requests" in got:
                table.append((scenario, "requests sent", str(got["requests"])))
    table += synth_figures([int(n) for n in args.sizes.split(",")], args.repeat)
    width = [max(len(row[i]) for row in table) for i in range(3)]
    print(f"{'scenario':<{width[0]}}  {'figure':<{width[1]}}  value")
    for a, b, c in table:
        print(f"{a:<{width[0]}}  {b:<{width[1]}}  {c}")


if __name__ == "__main__":
    main()
