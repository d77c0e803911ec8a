"""Branch stacks in the Pulumi backend: what the pipeline records on them, and how it reads them back.

    python -m tools.branch_pins name BRANCH                  # the stack name a branch gets
    python -m tools.branch_pins pin STACK --branch BRANCH

`pin` runs once per pipeline run, after `pulumi stack init --copy-config-from ci` (or after
`pulumi config cp` for a stack that exists). It gives the stack a slot of the branch pools the
first time (probing past the slots other live branch stacks hold, see allocate_slot below),
records slot, source branch and creation time as stack tags (they live in the backend, so every
later run and the reaper read the same values), and writes them into the stack config
(`estate.branch.slot|created|source`) where the program's derivation reads them.

Everything here talks to the backend through the Pulumi Automation API, which drives the
`pulumi` CLI; without the CLI the commands stop with a message that says so.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components import strict_yaml
from components.model import CONFIG_NAMESPACE, ESTATE_KEY, EstateConfigError
from components.model.branch import BranchSettings, preferred_slot, stack_name

PROJECT_DIR = Path(__file__).resolve().parent.parent
TEMPLATE = PROJECT_DIR / "Pulumi.ci.yaml"
TAG_BRANCH = "swarm-estate:branch"
TAG_CREATED = "swarm-estate:created"
TAG_SLOT = "swarm-estate:slot"


class PulumiCliMissingError(RuntimeError):
    pass


@dataclass(frozen=True)
class StackInfo:
    """One stack as the reaper and the slot allocator see it."""

    name: str
    branch: str | None = None  # the swarm-estate:branch tag; None: not a branch stack
    created: datetime | None = None
    last_update: datetime | None = None
    slot: int | None = None
    update_in_progress: bool = False

    @staticmethod
    def from_tags(
        name: str, tags: dict[str, str], last_update: datetime | None = None, busy: bool = False
    ) -> StackInfo:
        slot = tags.get(TAG_SLOT, "")
        return StackInfo(
            name=name,
            branch=tags.get(TAG_BRANCH),
            created=parse_time(tags[TAG_CREATED]) if tags.get(TAG_CREATED) else None,
            last_update=last_update,
            slot=int(slot) if slot.isdigit() else None,
            update_in_progress=busy,
        )


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- slots: a new stack probes past the slots other live branch stacks hold ------------------------------------


class BranchPoolExhausted(ValueError):  # noqa: N818 - reads as what happened, like the model's errors
    pass


@dataclass(frozen=True)
class Allocation:
    stack: str
    slot: int
    preferred: int
    collided_with: tuple[str, ...] = ()

    def report(self) -> str:
        if not self.collided_with:
            return f"{self.stack}: slot {self.slot}"
        holders = ", ".join(self.collided_with)
        return f"{self.stack}: preferred slot {self.preferred} is held by {holders}; took slot {self.slot} instead"


def allocate_slot(stack: str, slots: int, taken: Mapping[str, int]) -> Allocation:
    """The slot of a new stack, given the slots other live stacks hold (linear probing)."""
    preferred = preferred_slot(stack, slots)
    if stack in taken:
        return Allocation(stack, taken[stack], preferred)
    holders: dict[int, list[str]] = {}
    for other, slot in taken.items():
        holders.setdefault(slot, []).append(other)
    collided: list[str] = []
    for step in range(slots):
        slot = (preferred + step) % slots
        if slot not in holders:
            return Allocation(stack, slot, preferred, tuple(collided))
        collided += sorted(holders[slot])
    raise BranchPoolExhausted(
        f"no free slot for branch stack {stack!r}: all {slots} slots of the branch pool are held "
        f"({len(taken)} branch stacks); destroy old ones (python -m tools.reap) or enlarge "
        "branch.node_pool / branch.overlay_pool / branch.port_stride range"
    )


def allocate_slots(stacks: Sequence[str], slots: int, taken: Mapping[str, int] | None = None) -> list[Allocation]:
    """Allocate in the order the stacks were created; earlier stacks keep their preferred slot."""
    held = dict(taken or {})
    out = []
    for stack in stacks:
        allocation = allocate_slot(stack, slots, held)
        held[stack] = allocation.slot
        out.append(allocation)
    return out


@dataclass(frozen=True)
class Pin:
    stack: str
    branch: str
    allocation: Allocation
    created: datetime
    moved_from: int | None = None  # the slot an older stack also holds, which this one left

    def tags(self) -> dict[str, str]:
        return {TAG_BRANCH: self.branch, TAG_SLOT: str(self.allocation.slot), TAG_CREATED: iso(self.created)}

    def config(self) -> dict[str, str]:
        prefix = f"{CONFIG_NAMESPACE}:{ESTATE_KEY}.branch"
        return {
            f"{prefix}.slot": str(self.allocation.slot),
            f"{prefix}.created": iso(self.created),
            f"{prefix}.source": self.branch,
        }


def pin_plan(stack: str, branch: str, stacks: list[StackInfo], slots: int, now: datetime) -> Pin:
    """Keep what the stack already holds; otherwise take a free slot and the current time.

    Two pipelines pinning at the same moment can both pick one free slot (the backend has no
    lock for this). The engine then refuses the second one's network, and on its next run the
    younger stack moves on, so the clash cannot outlive one failed run.
    """
    own = next((s for s in stacks if s.name == stack), None)
    others = [s for s in stacks if s.name != stack and s.branch is not None and s.slot is not None]
    taken = {s.name: s.slot for s in others if s.slot is not None}
    created = own.created if own is not None and own.created is not None else now
    if own is None or own.slot is None or own.slot >= slots:
        return Pin(stack, branch, allocate_slot(stack, slots, taken), created)
    if _younger_twin(own, created, others):
        return Pin(stack, branch, allocate_slot(stack, slots, taken), created, moved_from=own.slot)
    return Pin(stack, branch, Allocation(stack, own.slot, own.slot), created)


def _younger_twin(own: StackInfo, created: datetime, others: list[StackInfo]) -> bool:
    """Does an older stack hold the same slot?"""
    far_future = datetime.max.replace(tzinfo=UTC)
    return any(o.slot == own.slot and (o.created or far_future, o.name) < (created, own.name) for o in others)


def template_slots(template: Path = TEMPLATE) -> int:
    doc = strict_yaml.load(template.read_text(), str(template)) or {}
    raw = (doc.get("config") or {}).get(f"{CONFIG_NAMESPACE}:{ESTATE_KEY}") or {}
    section = raw.get("branch")
    if section is None:
        raise EstateConfigError([f"{template.name}: the template has no `branch:` section"])
    return BranchSettings.model_validate(section).slot_count()


# --- the backend, through the Automation API ----------------------------------------------


def workspace() -> Any:
    if shutil.which("pulumi") is None:
        raise PulumiCliMissingError(
            "the Pulumi CLI is not installed; the Automation API drives it, so nothing can be read from or "
            "done to the stacks here: install it (https://www.pulumi.com/docs/install/) or run this in the pipeline"
        )
    from pulumi import automation as auto

    return auto.LocalWorkspace(work_dir=str(PROJECT_DIR))


def read_stacks(ws: Any) -> list[StackInfo]:
    out = []
    for summary in ws.list_stacks():
        try:
            tags = dict(ws.list_tags(summary.name))
        except Exception:  # noqa: BLE001 - a backend without tags has no branch stacks we made
            tags = {}
        out.append(StackInfo.from_tags(summary.name, tags, summary.last_update, bool(summary.update_in_progress)))
    return out


def apply_pin(ws: Any, pin: Pin) -> None:
    from pulumi import automation as auto

    for key, value in pin.tags().items():
        ws.set_tag(pin.stack, key, value)
    for key, value in pin.config().items():
        ws.set_config(pin.stack, key, auto.ConfigValue(value=value), path=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.branch_pins")
    sub = parser.add_subparsers(dest="command", required=True)
    name = sub.add_parser("name", help="print the stack name a git branch gets")
    name.add_argument("branch")
    pin = sub.add_parser("pin", help="give a branch stack its slot and creation time (idempotent)")
    pin.add_argument("stack")
    pin.add_argument("--branch", required=True, help="the git branch the stack is for")
    args = parser.parse_args(argv)
    if args.command == "name":
        print(stack_name(args.branch))
        return 0
    if stack_name(args.branch) != args.stack:
        expected = stack_name(args.branch)
        print(f"error: branch {args.branch!r} maps to stack {expected!r}, not {args.stack!r}", file=sys.stderr)
        return 2
    try:
        ws = workspace()
        plan = pin_plan(args.stack, args.branch, read_stacks(ws), template_slots(), datetime.now(UTC))
        apply_pin(ws, plan)
    except (PulumiCliMissingError, BranchPoolExhausted, EstateConfigError, strict_yaml.YamlError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if plan.moved_from is not None:
        print(
            f"::warning::slot collision: {args.stack} and an older branch stack were both given slot "
            f"{plan.moved_from}; {args.stack} moves to slot {plan.allocation.slot}",
            file=sys.stderr,
        )
    elif plan.allocation.collided_with:
        print(f"::warning::slot collision: {plan.allocation.report()}", file=sys.stderr)
    print(plan.allocation.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
