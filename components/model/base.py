"""Shared pieces of the estate model: strict base class, rule violations, small value types."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

CONFIG_NAMESPACE = "swarm-estate"
ESTATE_KEY = "estate"


# The docker provider names a resource without an explicit name `<resource name>-<7 random characters>`: swarm
# names (at most 64 characters) of secrets the program creates must leave room for it.
AUTONAME_SUFFIX = 8


class Strict(BaseModel):
    """Every model forbids unknown keys: a typo in a stack file must fail, not be ignored.

    `identity` names the field that tells two items of a list apart (a hypervisor by its name, a mount by its
    target): two items with the same one would become one resource name, or the second would silently win."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    identity: ClassVar[str] = "name"


def duplicate_items(
    model: BaseModel, path: tuple[str | int, ...] = (), skip: frozenset[tuple[str | int, ...]] = frozenset()
) -> list[Violation]:
    """Items of any list in `model` (at any depth) that share their identity with an earlier item."""
    out: list[Violation] = []
    for key, value in model:
        here = (*path, key)
        children = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else [value]
        keys = range(len(value)) if isinstance(value, list) else list(value) if isinstance(value, dict) else [None]
        first: dict[Any, int] = {}
        for index, item in zip(keys, children, strict=True):
            if not isinstance(item, BaseModel):
                continue
            at = here if index is None else (*here, index)
            out += duplicate_items(item, at, skip)
            identity = getattr(item, getattr(item, "identity", "name"), None)
            if not isinstance(value, list) or here in skip or identity is None:
                continue
            if isinstance(index, int) and identity in first:
                field = getattr(item, "identity", "name")
                out.append(Violation((*at, field), f"{identity!s} is also the {field} of "
                                     f"{config_path((*here, first[identity]))}: each entry needs its own"))
            elif isinstance(index, int):
                first[identity] = index
    return out


@dataclass(frozen=True)
class Violation:
    """One broken rule, located by a path relative to the model that found it."""

    path: tuple[str | int, ...]
    message: str


class RuleViolations(ValueError):  # noqa: N818 - pydantic wraps ValueErrors; the name says what it carries
    """Raised by model validators that check rules spanning several fields.

    Carrying the relative path lets the loader report `swarm-estate:estate.swarm.managers`
    instead of pydantic's bare location of the model that ran the check.
    """

    def __init__(self, violations: Iterable[Violation]):
        self.violations = list(violations)
        super().__init__("; ".join(v.message for v in self.violations))


def raise_if_any(violations: list[Violation]) -> None:
    if violations:
        raise RuleViolations(violations)


def config_path(loc: Iterable[str | int], key: str = ESTATE_KEY) -> str:
    """`("swarm", "workers", "nodes", 2, "address")` -> `swarm-estate:estate.swarm.workers.nodes[2].address`."""
    text = f"{CONFIG_NAMESPACE}:{key}"
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


# --- small value types -------------------------------------------------------------------

_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9._/:-]*$")


def _dns_name(value: str) -> str:
    name = value.lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_DNS_LABEL.match(label) for label in labels):
        raise ValueError(
            f"{value!r} is not a valid DNS name: use dot-separated labels of a-z, 0-9 and '-', "
            "each 1-63 characters, at least two labels, 253 characters in all"
        )
    if labels[-1].isdigit():
        raise ValueError(f"{value!r} looks like an IP address, not a DNS name")
    return name


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: start with a letter, then lowercase letters, digits "
            "or '-', at most 63 characters (it becomes part of host, container and volume names)"
        )
    return value


def _labels(value: Any) -> dict[str, str]:
    """Labels are written either as a mapping or as a list of `key=value` strings (the seeds' style)."""
    if value is None:
        return {}
    pairs: list[tuple[str, str]] = []
    if isinstance(value, dict):
        pairs = [(str(k), "" if v is None else str(v)) for k, v in value.items()]
    elif isinstance(value, list):
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise ValueError(f"label {item!r} must be written as key=value (e.g. function=production)")
            k, v = item.split("=", 1)
            pairs.append((k.strip(), v.strip()))
    else:
        raise ValueError("labels must be a mapping or a list of key=value strings")
    out: dict[str, str] = {}
    for k, v in pairs:
        if not _LABEL_KEY.match(k):
            raise ValueError(f"label key {k!r} is invalid: use letters, digits, '.', '_' or '-'")
        if not _LABEL_VALUE.match(v):
            raise ValueError(f"label {k}={v!r} has an invalid value: use letters, digits and . _ / : -")
        if k in out:
            raise ValueError(f"label key {k!r} is given twice")
        out[k] = v
    return dict(sorted(out.items()))


DnsName = Annotated[str, AfterValidator(_dns_name)]
Name = Annotated[str, AfterValidator(_name)]
Labels = Annotated[dict[str, str], BeforeValidator(_labels)]
Port = Annotated[int, Field(ge=1, le=65535, description="TCP/UDP port, 1..65535")]
class _SecretRefMark:
    """Marks a field as naming a secret config key, so the validation step can find every reference."""


SecretRef = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z][A-Za-z0-9_]*$",
        description="name of a secret stack config key (`pulumi config set --secret <name> …`)",
    ),
    _SecretRefMark(),
]


def _names_secret(annotation: Any, metadata: Iterable[Any] = ()) -> bool:
    if any(isinstance(m, _SecretRefMark) for m in metadata):
        return True
    return any(_names_secret(arg, getattr(arg, "__metadata__", ())) for arg in get_args(annotation))


def secret_refs(model: BaseModel, path: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], str]]:
    """(config path, key) of every secret config key the model names, at any depth, but not in a section that
    is switched off (`enabled: false`): its secrets are never read."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    if getattr(model, "enabled", True) is False:
        return out
    for key, info in type(model).model_fields.items():
        value = getattr(model, key)
        names = _names_secret(info.annotation, info.metadata)
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
        for sub, item in items if items is not None else [(None, value)]:
            at = (*path, key) if sub is None else (*path, key, sub)
            if isinstance(item, BaseModel):
                out += secret_refs(item, at)
            elif names and isinstance(item, str):
                out.append((at, item))
    return out

# The model's durations go verbatim into HAProxy configs, so they are written in HAProxy's time format:
# one whole number and one unit (Go's compound 1m30s is not one HAProxy accepts).
_HAPROXY_TIME = re.compile(r"^\d+(ms|s|m|h|d)$")


def _duration(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = f"{int(value)}s"
    if not isinstance(value, str) or not _HAPROXY_TIME.match(value):
        raise ValueError(f"{value!r} is not a duration: write a whole number with ms, s, m, h or d (e.g. 2s)")
    return value


Duration = Annotated[str, BeforeValidator(_duration)]
