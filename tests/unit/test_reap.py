"""The reaper's selection rules, its command line, and the branch-stack pinning it relies on."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from components.model.branch import preferred_slot
from tests.harness.project import ROOT
from tools.branch_pins import (
    TAG_BRANCH,
    TAG_CREATED,
    TAG_SLOT,
    BranchPoolExhausted,
    StackInfo,
    pin_plan,
    template_slots,
)
from tools.reap import live_branches_from_git, parse_age, select

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
THREE_DAYS = timedelta(days=3)


def branch_stack(name: str, branch: str, age: timedelta, **kw: object) -> StackInfo:
    return StackInfo(name=name, branch=branch, created=NOW - age, **kw)  # type: ignore[arg-type]


def verdicts(stacks: list[StackInfo], live: set[str] | None) -> dict[str, bool]:
    return {d.stack: d.reap for d in select(stacks, live, THREE_DAYS, NOW)}


def test_parse_age() -> None:
    assert parse_age("3d") == timedelta(days=3)
    assert parse_age("12h") == timedelta(hours=12)
    assert parse_age("1w") == timedelta(weeks=1)
    with pytest.raises(ValueError, match="not an age"):
        parse_age("3 days")


def test_a_stack_whose_branch_is_gone_is_selected_whatever_its_age() -> None:
    stacks = [branch_stack("feature-a", "feature-a", timedelta(hours=1))]
    (decision,) = select(stacks, {"main", "feature-b"}, THREE_DAYS, NOW)
    assert decision.reap and "no longer exists" in decision.reason


def test_a_stack_older_than_the_limit_is_selected_even_if_its_branch_lives() -> None:
    stacks = [
        branch_stack("old", "old", timedelta(days=3, hours=1)),
        branch_stack("young", "young", timedelta(days=2, hours=23)),
    ]
    assert verdicts(stacks, {"main", "old", "young"}) == {"old": True, "young": False}


def test_long_lived_stacks_are_never_selected() -> None:
    ancient = timedelta(days=400)
    stacks = [
        branch_stack("prod", "prod", ancient),
        branch_stack("dev", "gone", ancient),
        branch_stack("ci", "gone", ancient),
        branch_stack("acme/swarm-estate/prod", "gone", ancient),
        StackInfo(name="prod", branch=None, last_update=NOW - ancient),
    ]
    assert not any(d.reap for d in select(stacks, {"main"}, THREE_DAYS, NOW))
    assert not any(d.reap for d in select(stacks, None, THREE_DAYS, NOW))


def test_untagged_stacks_are_not_branch_stacks() -> None:
    stacks = [StackInfo(name="alice-experiment", branch=None, last_update=NOW - timedelta(days=90))]
    (decision,) = select(stacks, {"main"}, THREE_DAYS, NOW)
    assert not decision.reap and "not a branch stack" in decision.reason


def test_a_stack_being_updated_is_left_alone() -> None:
    stacks = [branch_stack("feature-a", "feature-a", timedelta(days=9), update_in_progress=True)]
    assert verdicts(stacks, {"main"}) == {"feature-a": False}


def test_without_a_branch_list_only_age_counts_and_an_empty_list_is_not_believed() -> None:
    stacks = [
        branch_stack("young", "young", timedelta(hours=2)),
        branch_stack("old", "old", timedelta(days=4)),
    ]
    assert verdicts(stacks, None) == {"old": True, "young": False}
    assert verdicts(stacks, set()) == {"old": True, "young": False}


def test_extra_keep_names_and_the_last_update_fallback() -> None:
    stacks = [
        StackInfo(name="staging", branch="staging", last_update=NOW - timedelta(days=30)),
        StackInfo(name="feature-x", branch="feature/x", last_update=NOW - timedelta(days=30)),
        StackInfo(name="feature-y", branch="feature/y"),
    ]
    decisions = {d.stack: d for d in select(stacks, None, THREE_DAYS, NOW, keep={"staging"})}
    assert not decisions["staging"].reap
    assert decisions["feature-x"].reap, "without a creation tag the last update dates the stack"
    assert not decisions["feature-y"].reap and "age unknown" in decisions["feature-y"].reason


def run_reap(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path} if path is not None else None
    return subprocess.run(
        [sys.executable, "-m", "tools.reap", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dry_run_lists_what_would_go_and_destroys_nothing(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    stacks = tmp_path / "stacks.json"
    stacks.write_text(
        json.dumps(
            [
                {"name": "prod", "branch": None, "last_update": "2020-01-01T00:00:00Z"},
                {"name": "feature-gone", "branch": "feature/gone", "created": (now - timedelta(hours=1)).isoformat()},
                {"name": "feature-live", "branch": "feature/live", "created": (now - timedelta(hours=1)).isoformat()},
            ]
        )
    )
    branches = tmp_path / "branches"
    branches.write_text("main\nfeature/live\n")
    out = run_reap("--older-than", "3d", "--stacks", str(stacks), "--branches", str(branches))
    assert out.returncode == 0, out.stderr
    rows = {line.split()[1]: line.split()[0] for line in out.stdout.splitlines()[1:] if line.strip() and "  " in line}
    assert rows == {"prod": "keep", "feature-gone": "destroy", "feature-live": "keep"}
    assert "dry run: nothing destroyed; --destroy would destroy 1 stack(s)" in out.stdout


def test_without_the_pulumi_cli_the_reaper_says_so(tmp_path: Path) -> None:
    out = run_reap("--older-than", "3d", path=str(tmp_path))
    assert out.returncode == 2
    assert "Pulumi CLI is not installed" in out.stderr


def test_destroy_without_the_cli_fails_before_touching_anything(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks.json"
    stacks.write_text(json.dumps([{"name": "feature-gone", "branch": "feature/gone"}]))
    branches = tmp_path / "branches"
    branches.write_text("main\n")
    out = run_reap(
        "--older-than", "3d", "--stacks", str(stacks), "--branches", str(branches), "--destroy", path=str(tmp_path)
    )
    assert out.returncode == 2 and "Pulumi CLI is not installed" in out.stderr


def test_live_branches_come_from_git_ls_remote(tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    work = tmp_path / "work"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.test", "-c", "init.defaultBranch=main"]

    def run(*args: str, cwd: Path = tmp_path) -> None:
        subprocess.run([*git, *args], cwd=cwd, check=True, capture_output=True, timeout=60)

    run("init", "--bare", str(origin))
    run("init", str(work))
    run("commit", "--allow-empty", "-m", "x", cwd=work)
    run("branch", "feature/ünï", cwd=work)
    run("remote", "add", "origin", str(origin), cwd=work)
    run("push", "origin", "main", "feature/ünï", cwd=work)
    assert live_branches_from_git("origin", cwd=work) == {"main", "feature/ünï"}
    assert live_branches_from_git("no-such-remote", cwd=work) is None


# --- pinning a branch stack's slot and creation time ----------------------------------------


def test_the_ci_template_offers_256_slots() -> None:
    assert template_slots(ROOT / "Pulumi.ci.yaml") == 256


def test_a_new_stack_gets_a_free_slot_and_now() -> None:
    slots = 16
    rival = next(f"rival-{i}" for i in range(500) if preferred_slot(f"rival-{i}", slots) == preferred_slot("new", 16))
    others = [StackInfo(rival, branch=rival, slot=preferred_slot("new", slots)), StackInfo("prod")]
    pin = pin_plan("new", "feature/new", others, slots, NOW)
    assert pin.allocation.slot != preferred_slot("new", slots)
    assert pin.allocation.collided_with == (rival,)
    assert pin.created == NOW
    assert pin.tags() == {
        TAG_BRANCH: "feature/new",
        TAG_SLOT: str(pin.allocation.slot),
        TAG_CREATED: "2026-11-22T12:00:00Z",
    }
    assert pin.config()["swarm-estate:estate.branch.slot"] == str(pin.allocation.slot)


def test_an_existing_stack_keeps_its_slot_and_creation_time() -> None:
    created = NOW - timedelta(days=2)
    own = StackInfo.from_tags(
        "feature-a", {TAG_BRANCH: "feature/a", TAG_SLOT: "9", TAG_CREATED: "2026-11-20T12:00:00Z"}
    )
    pin = pin_plan("feature-a", "feature/a", [own, StackInfo("other", branch="o", slot=3)], 16, NOW)
    assert (pin.allocation.slot, pin.created) == (9, created)


def test_pinning_into_a_full_pool_is_a_clear_error() -> None:
    others = [StackInfo(f"s{i}", branch=f"s{i}", slot=i) for i in range(4)]
    with pytest.raises(BranchPoolExhausted, match="all 4 slots"):
        pin_plan("new", "new", others, 4, NOW)


def run_pin(*args: str, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.branch_pins", "pin", *args],
        cwd=ROOT,
        env={"PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_pin_refuses_a_stack_that_is_not_the_branch_s(tmp_path: Path) -> None:
    out = run_pin("feature-a", "--branch", "feature/b", path=str(tmp_path))
    assert out.returncode == 2 and "maps to stack" in out.stderr


def test_pin_without_the_pulumi_cli_says_so(tmp_path: Path) -> None:
    out = run_pin("feature-a", "--branch", "feature-a", path=str(tmp_path))
    assert out.returncode == 2 and "Pulumi CLI is not installed" in out.stderr


def test_of_two_stacks_pinned_to_one_slot_at_once_the_younger_moves() -> None:
    older = StackInfo("feature-a", branch="feature/a", slot=5, created=NOW - timedelta(minutes=2))
    younger = StackInfo("feature-b", branch="feature/b", slot=5, created=NOW - timedelta(minutes=1))
    moved = pin_plan("feature-b", "feature/b", [older, younger], 16, NOW)
    kept = pin_plan("feature-a", "feature/a", [older, younger], 16, NOW)
    assert kept.allocation.slot == 5
    assert moved.allocation.slot != 5 and moved.moved_from == 5
    assert kept.moved_from is None
    assert moved.created == younger.created, "moving slot does not make the stack younger"
