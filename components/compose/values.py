"""Scalar coercion and the deploy sub-sections of a compose service (restart, update, resources)."""

from __future__ import annotations

import shlex
from typing import Any

from ..units import parse_bytes, parse_duration, parse_nano_cpus
from .problems import Problems
from .spec import Resources, RestartPolicy, UpdateConfig

# --- scalar coercion (interpolation turns numbers into strings, as in Docker's loader) ----------


def to_bool(value: Any, problems: Problems) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0", "none"):
        return False
    problems.error(f"{value!r} is not a boolean")
    return False


def to_int(value: Any, problems: Problems) -> int | None:
    if isinstance(value, bool):
        problems.error(f"{value!r} is not a whole number")
        return None
    try:
        return int(str(value), 0) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        problems.error(f"{value!r} is not a whole number")
        return None


def scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def opt_str(value: Any) -> str | None:
    return None if value is None else scalar(value)


def str_map(value: Any, problems: Problems) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.error("must be a mapping")
        return {}
    return {str(k): "" if v is None else scalar(v) for k, v in value.items()}


def label_map(value: Any, problems: Problems, sep: str = "=") -> dict[str, str]:
    """Labels and sysctls: a mapping, or a list of `key=value` (a bare key means an empty value)."""
    if value is None:
        return {}
    if isinstance(value, list):
        out = {}
        for item in value:
            key, _, val = str(item).partition(sep)
            out[key] = val
        return out
    return str_map(value, problems)


def durations(body: dict[str, Any], keys: tuple[str, ...], problems: Problems) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for key in keys:
        out[key] = None
        if body.get(key) is not None:
            try:
                out[key] = parse_duration(body[key])
            except ValueError as exc:
                problems.at(key).error(str(exc))
    return out


def split_command(value: Any, problems: Problems) -> tuple[str, ...] | None:
    """A command is a list, or a string split like a shell would (no expansion), as Docker does."""
    if value is None:
        return None
    if isinstance(value, list):
        return tuple(scalar(v) for v in value)
    try:
        return tuple(shlex.split(str(value)))
    except ValueError as exc:
        problems.error(f"cannot split {value!r} into arguments: {exc}")
        return None


def restart_policy(body: Any, problems: Problems) -> RestartPolicy | None:
    if not body:
        return None
    for key in set(body) - {"condition", "delay", "max_attempts", "window"}:
        problems.at(key).error("not a restart_policy key")
    if body.get("condition") not in (None, "none", "on-failure", "any"):
        problems.at("condition").error(f"{body['condition']!r} is not none, on-failure or any")
    times = durations(body, ("delay", "window"), problems)
    attempts = body.get("max_attempts")
    return RestartPolicy(
        condition=opt_str(body.get("condition")),
        delay=times["delay"],
        max_attempts=None if attempts is None else to_int(attempts, problems.at("max_attempts")),
        window=times["window"],
    )


def update_config(body: Any, problems: Problems) -> UpdateConfig | None:
    if not body:
        return None
    for key in set(body) - {"parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order"}:
        problems.at(key).error("not an update/rollback key")
    if body.get("order") not in (None, "stop-first", "start-first"):
        problems.at("order").error(f"{body['order']!r} is not stop-first or start-first")
    if body.get("failure_action") not in (None, "pause", "continue", "rollback"):
        problems.at("failure_action").error(f"{body['failure_action']!r} is not pause, continue or rollback")
    times = durations(body, ("delay", "monitor"), problems)
    ratio = body.get("max_failure_ratio")
    parallelism = body.get("parallelism")
    return UpdateConfig(
        parallelism=None if parallelism is None else to_int(parallelism, problems.at("parallelism")),
        delay=times["delay"],
        failure_action=opt_str(body.get("failure_action")),
        monitor=times["monitor"],
        max_failure_ratio=None if ratio is None else float(ratio),
        order=opt_str(body.get("order")),
    )


def resources(body: Any, problems: Problems) -> Resources | None:
    if not body:
        return None
    values: dict[str, Any] = {}
    sections = (
        ("limits", "limit", {"cpus", "memory"}),
        ("reservations", "reserve", {"cpus", "memory", "generic_resources"}),
    )
    for section, prefix, allowed in sections:
        part = body.get(section) or {}
        at = problems.at(section)
        for key in set(part) - allowed:
            at.at(key).error("not supported by the docker provider's Service, so swarm-estate cannot deploy it")
        try:
            if part.get("cpus") is not None:
                values[f"{prefix}_nano_cpus"] = parse_nano_cpus(part["cpus"])
            if part.get("memory") is not None:
                values[f"{prefix}_memory"] = parse_bytes(part["memory"])
        except ValueError as exc:
            at.error(str(exc))
    for key in set(body) - {"limits", "reservations"}:
        problems.at(key).error("not a resources key")
    generic = []
    for item in (body.get("reservations") or {}).get("generic_resources") or []:
        spec = item.get("discrete_resource_spec") or item.get("named_resource_spec") if isinstance(item, dict) else None
        if not spec or len(item) != 1:
            problems.at("reservations", "generic_resources").error(f"{item!r} is not a discrete or named resource")
            continue
        generic.append(f"{spec.get('kind')}={spec.get('value')}")
    return Resources(**values, generic=tuple(generic))
