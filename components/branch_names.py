"""Branch names and slots: pure, dependency-free, shared by the program, the pipeline and the reaper.

A git branch becomes a stack name (`stack_name`); a stack name prefers a numbered slot of the
branch pools (`preferred_slot`, a hash, stable across runs and machines); when two live stacks
prefer the same slot the later one probes to the next free slot (`allocate_slot`), and the
collision is reported, not silently shared.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MAX_NAME_LENGTH = 32
HASH_LENGTH = 8


# --- names -------------------------------------------------------------------------------


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stack_name(branch: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """The stack (and estate) name of a git branch: lowercase `[a-z0-9-]`, starting with a letter.

    When the mapping loses anything (case, `/`, accents, other scripts, length) a hash of the
    original name is appended, so `Feature/Foo`, `feature/foo` and `feature-foo` stay three
    stacks. A name that is already valid maps to itself, so the function is idempotent.
    """
    if max_length < HASH_LENGTH + 3:
        raise ValueError(f"max_length {max_length} leaves no room for the {HASH_LENGTH}-character hash suffix")
    ascii_text = unicodedata.normalize("NFKD", branch).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if text and not text[0].isalpha():
        text = f"b-{text}"
    if text and text == branch and len(text) <= max_length:
        return text
    room = max_length - HASH_LENGTH - 1
    head = text[:room].rstrip("-") or "b"
    return f"{head}-{_digest(branch)[:HASH_LENGTH]}"


# --- slots -------------------------------------------------------------------------------


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


def preferred_slot(stack: str, slots: int) -> int:
    # sha256, not hash(): Python salts str hashes per process, and the slot must be stable.
    return int(_digest(stack)[:12], 16) % slots


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
