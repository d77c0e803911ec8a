"""The README stays true: its picture is today's prod synth, its commands are the ones CI runs."""

from __future__ import annotations

import re

from tests.harness.project import ROOT
from tools.synth import run_program, stack_config


def readme() -> str:
    return (ROOT / "README.md").read_text()


def test_readme_picture_is_the_current_prod_synth():
    picture = run_program(stack_config(ROOT / "Pulumi.prod.yaml"), stack="prod").files["estate.mmd"]
    blocks = re.findall(r"```mermaid\n(.*?)```", readme(), flags=re.S)
    assert blocks, "README embeds no mermaid picture"
    assert blocks[0] == picture, "README picture is stale: paste files/estate.mmd of `tools.synth prod`"


def test_quick_start_has_exactly_two_setup_commands_and_ci_runs_the_second():
    quick = readme().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    first_block = re.findall(r"```sh\n(.*?)```", quick, flags=re.S)[0]
    commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
    assert commands == ["bash tools/dev up", "bash tests/run"]  # the main job for real, then the suite
    assert "bash tests/run" in (ROOT / ".ci" / "run").read_text()


def test_layout_table_names_paths_that_exist():
    """Every path the layout table names is there (a row's first cell: `dir/file.py`, then names beside it)."""
    layout = readme().split("## Layout", 1)[1].split("\n## ", 1)[0]
    missing = []
    for row in re.findall(r"^\| (`[^|]+) \|", layout, flags=re.M):
        names = re.findall(r"`([^`]+)`", row)
        folder = names[0].rsplit("/", 1)[0] if "/" in names[0].rstrip("/") else ""
        for name in names:
            path = ROOT / (name if "/" in name or not folder else f"{folder}/{name}")
            if not path.exists():
                missing.append(name)
    assert missing == [], f"README layout names paths that do not exist: {missing}"
