"""Reaper: find branch stacks whose branch is gone or that are too old, and destroy them when asked.

    python -m tools.reap --older-than 3d            # dry run: list what would go, and why
    python -m tools.reap --older-than 3d --destroy  # pulumi destroy + pulumi stack rm each

A branch stack is one the pipeline tagged `swarm-estate:branch` (tools/branch_pins.py);
untagged stacks and the long-lived ones (prod, dev, ci, --keep) are never selected. Live branches
come from `git ls-remote --heads` (or --branches FILE); when they cannot be listed only the age
rule applies. Facts come from the backend through the Automation API, or from --stacks FILE.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .branch_pins import PROJECT_DIR, PulumiCliMissingError, StackInfo, parse_time, read_stacks, workspace

LONG_LIVED = frozenset({"prod", "dev", "ci"})
_AGE = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    match = _AGE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not an age: write a whole number with m, h, d or w (e.g. 3d)")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass(frozen=True)
class Decision:
    stack: str
    reap: bool
    reason: str


def _short(age: timedelta) -> str:
    hours = int(age.total_seconds() // 3600)
    return f"{hours // 24}d{hours % 24}h" if hours >= 24 else f"{hours}h"


def select(
    stacks: Iterable[StackInfo],
    live_branches: Collection[str] | None,
    older_than: timedelta,
    now: datetime,
    keep: Collection[str] = LONG_LIVED,
) -> list[Decision]:
    """Which stacks to destroy, and why; pure, so every rule has a test.

    `live_branches` None means the branch list was unavailable: only the age rule applies. An
    empty list is taken as unavailable too: a repository always has a branch, so an empty answer
    is a broken listing, and believing it would destroy every branch stack at once.
    """
    if live_branches is not None and not live_branches:
        live_branches = None
    out = []
    for stack in sorted(stacks, key=lambda s: s.name):
        short_name = stack.name.rsplit("/", 1)[-1]
        if short_name in keep or stack.name in keep:
            out.append(Decision(stack.name, False, "long-lived stack: never reaped"))
            continue
        if stack.branch is None:
            out.append(Decision(stack.name, False, "not a branch stack (no swarm-estate:branch tag)"))
            continue
        if stack.update_in_progress:
            out.append(Decision(stack.name, False, "an update is running: left for the next round"))
            continue
        if live_branches is not None and stack.branch not in live_branches:
            out.append(Decision(stack.name, True, f"branch {stack.branch!r} no longer exists"))
            continue
        born = stack.created or stack.last_update
        if born is None:
            out.append(Decision(stack.name, False, "age unknown (no creation tag, never updated)"))
            continue
        age = now - born
        limit = _short(older_than)
        if age > older_than:
            out.append(Decision(stack.name, True, f"created {_short(age)} ago, over the {limit} limit"))
        else:
            out.append(Decision(stack.name, False, f"{_short(age)} old, within the {limit} limit"))
    return out


def table(decisions: list[Decision]) -> str:
    rows = [("ACTION", "STACK", "WHY")] + [("destroy" if d.reap else "keep", d.stack, d.reason) for d in decisions]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2]}" for r in rows)


def live_branches_from_git(remote: str, cwd: Path = PROJECT_DIR) -> set[str] | None:
    try:
        out = subprocess.run(
            ["git", "ls-remote", "--heads", remote], cwd=cwd, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return {line.split("refs/heads/", 1)[1] for line in out.stdout.splitlines() if "refs/heads/" in line}


def stacks_from_file(path: Path) -> list[StackInfo]:
    """A JSON list of {name, branch, created, last_update, update_in_progress} (for dry runs and tests)."""
    out = []
    for item in json.loads(path.read_text()):
        out.append(
            StackInfo(
                name=item["name"],
                branch=item.get("branch"),
                created=parse_time(item["created"]) if item.get("created") else None,
                last_update=parse_time(item["last_update"]) if item.get("last_update") else None,
                update_in_progress=bool(item.get("update_in_progress", False)),
            )
        )
    return out


def destroy(names: list[str]) -> list[str]:
    """`pulumi destroy` then `pulumi stack rm` for each; returns the stacks that failed."""
    from pulumi import automation as auto

    ws = workspace()
    failed = []
    for name in names:
        print(f"== destroying {name}", flush=True)
        try:
            stack = auto.select_stack(stack_name=name, work_dir=str(PROJECT_DIR))
            stack.destroy(on_output=print)
            ws.remove_stack(name)
        except auto.errors.CommandError as exc:
            print(f"error: {name}: {exc}", file=sys.stderr)
            failed.append(name)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.reap", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--older-than", required=True, help="age limit of a branch stack, e.g. 3d, 12h, 1w")
    parser.add_argument("--destroy", action="store_true", help="destroy and remove the selected stacks")
    parser.add_argument("--branches", type=Path, help="file with the live branch names, one a line")
    parser.add_argument("--remote", default="origin", help="git remote whose branches are live (default origin)")
    parser.add_argument("--stacks", type=Path, help="read the stacks from this JSON file instead of the backend")
    parser.add_argument("--keep", action="append", default=[], help="another stack never to reap (repeatable)")
    args = parser.parse_args(argv)
    try:
        older_than = parse_age(args.older_than)
        stacks = stacks_from_file(args.stacks) if args.stacks else read_stacks(workspace())
    except (ValueError, OSError, KeyError, PulumiCliMissingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.branches:
        live: set[str] | None = {b.strip() for b in args.branches.read_text().splitlines() if b.strip()}
    else:
        live = live_branches_from_git(args.remote)
        if live is None:
            print(f"warning: cannot list the branches of {args.remote!r}: only the age rule applies", file=sys.stderr)
    decisions = select(stacks, live, older_than, datetime.now(UTC), LONG_LIVED | set(args.keep))
    print(table(decisions))
    doomed = [d.stack for d in decisions if d.reap]
    if not args.destroy:
        print(f"\ndry run: nothing destroyed; --destroy would destroy {len(doomed)} stack(s)")
        return 0
    try:
        failed = destroy(doomed)
    except PulumiCliMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\ndestroyed {len(doomed) - len(failed)} of {len(doomed)} stack(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
