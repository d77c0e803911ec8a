"""Branch stacks under the real engine, driven the way the pipeline drives them (README, "Pipelines"):
`pulumi stack init <stack> --copy-config-from ci`, `python -m tools.branch_pins pin`, `pulumi up`,
`python -m tools.smoke`, and the reaper, against a file backend, on one isolated engine.

The project is a copy of the repository (the branch tools find the project from their own location), with
`Pulumi.ci.yaml` changed only where this machine needs it: its engine, offline images.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.model import load_estate
from components.model.branch import derive_branch, stack_name
from tests.harness import Engine
from tests.harness.estates import LocalImages
from tests.harness.probe import request
from tests.harness.project import estate_of
from tests.harness.pulumi import cli_env, project_copy

pytestmark = pytest.mark.slow

BRANCHES = ("feature/login", "fix-cache")
SMOKE_WAIT_S = 240


@dataclass
class Pipeline:
    engine: Engine
    project: Path
    env: dict[str, str]

    def run(self, *cmd: str, timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(list(cmd), cwd=self.project, env=self.env, capture_output=True, text=True,
                                timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout[-4000:]}\n"
                                 f"{result.stderr[-4000:]}")
        return result

    def pulumi(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run("pulumi", *args, "--non-interactive", **kw)

    def tool(self, module: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", module, *args, **kw)

    def bring_up(self, branch: str) -> str:
        """What the branch job does for one branch; returns its stack."""
        stack = stack_name(branch)
        self.pulumi("stack", "init", stack, "--copy-config-from", "ci")
        self.tool("tools.branch_pins", "pin", stack, "--branch", branch)
        self.pulumi("up", "-s", stack, "--yes", "--skip-preview")
        return stack

    def outputs(self, stack: str) -> dict[str, Any]:
        return json.loads(self.pulumi("stack", "output", "-s", stack, "--json").stdout)


def ci_template_for(engine: Engine, images: LocalImages) -> dict[str, Any]:
    """`Pulumi.ci.yaml`'s estate on this engine and these images; names, subnets and ports stay the program's
    to derive per branch."""
    raw = estate_of("ci")
    raw["docker"].update(engine_host=engine.host, image=images.node, preload_images=[images.haproxy, images.app],
                         api_socket_dir=str(engine.root / "api"))  # fmt: skip
    raw.setdefault("l7", {})["image"] = images.haproxy_id
    for stack in raw.get("stacks", {}).values():
        stack.setdefault("variables", {})["DEMO_IMAGE"] = images.app_id
    return raw


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    engine = Engine.start()
    work = tmp_path_factory.mktemp("engine-branch")
    pipe: Pipeline | None = None
    try:
        images = LocalImages.build(engine)
        project = project_copy(work / "project", copy=True)
        (project / "Pulumi.ci.yaml").write_text(
            yaml.safe_dump({"config": {"swarm-estate:estate": ci_template_for(engine, images)}})
        )
        pipe = Pipeline(engine, project, cli_env(work, {"DOCKER_API_VERSION": "1.41"}))
        pipe.pulumi("stack", "init", "ci")  # the one-time set-up of the template stack
        yield pipe
    finally:
        if pipe is not None:
            listed = pipe.pulumi("stack", "ls", "--json", check=False).stdout
            for name in [s["name"] for s in yaml.safe_load(listed or "[]") if s["name"] != "ci"]:
                pipe.pulumi("destroy", "-s", name, "--yes", "--skip-preview", check=False)
        engine.stop()


def test_two_branch_stacks_up_at_once_each_serve_only_their_own_names_and_the_tools_work(pipeline: Pipeline) -> None:
    stacks = [pipeline.bring_up(branch) for branch in BRANCHES]
    outputs = {s: pipeline.outputs(s) for s in stacks}
    hosts = {s: o["public_urls"][0].split("/")[2] for s, o in outputs.items()}
    entries = {s: o["l7_https_entrypoints"] for s, o in outputs.items()}
    assert len(set(hosts.values())) == 2 and not set(entries[stacks[0]]) & set(entries[stacks[1]])
    # four node containers on one engine: 1 manager + 1 worker per branch
    assert len(pipeline.engine.run("ps", "-q").stdout.split()) == 4

    for stack in stacks:
        smoke = pipeline.tool("tools.smoke", stack, "--wait", str(SMOKE_WAIT_S))
        assert f"{stack}: " in smoke.stdout and "checks passed" in smoke.stdout
        other = next(h for s, h in hosts.items() if s != stack)
        for entry in entries[stack]:
            assert request(entry, other, "/").status == 404  # the other branch's name is not served here
        # the slot the pin recorded is the one the program derived its subnet from
        tags = pipeline.pulumi("stack", "tag", "ls", "-s", stack, "--json").stdout
        slot = int(yaml.safe_load(tags)["swarm-estate:slot"])
        config = yaml.safe_load((pipeline.project / f"Pulumi.{stack}.yaml").read_text())["config"]
        derived = derive_branch(load_estate(copy.deepcopy(config["swarm-estate:estate"])), stack)
        assert int(config["swarm-estate:estate"]["branch"]["slot"]) == slot
        assert str(derived.node_network.subnet) == f"10.222.{slot}.0/24"

    # the reaper: the second branch is gone from the remote, so its stack goes; the first stays and serves
    live = pipeline.project / "live-branches"
    live.write_text(BRANCHES[0] + "\n")
    dry = pipeline.tool("tools.reap", "--older-than", "3d", "--branches", str(live))
    assert "dry run: nothing destroyed" in dry.stdout
    pipeline.tool("tools.reap", "--older-than", "3d", "--branches", str(live), "--destroy")
    listed = [s["name"] for s in yaml.safe_load(pipeline.pulumi("stack", "ls", "--json").stdout)]
    assert stacks[1] not in listed and stacks[0] in listed
    assert len(pipeline.engine.run("ps", "-q").stdout.split()) == 2
    pipeline.tool("tools.smoke", stacks[0], "--wait", str(SMOKE_WAIT_S))

    # the branch's cleanup job: destroy, then remove the stack; nothing is left on the engine
    pipeline.pulumi("destroy", "-s", stacks[0], "--yes", "--skip-preview")
    pipeline.pulumi("stack", "rm", stacks[0], "--yes")
    assert pipeline.engine.run("ps", "-aq").stdout.split() == []
    assert pipeline.engine.run("volume", "ls", "-q").stdout.split() == []
    assert sorted(pipeline.engine.run("network", "ls", "--format", "{{.Name}}").stdout.split()) == ["host", "none"]
