"""The estate model: stack config -> one validated pydantic object, before any resource exists."""

from __future__ import annotations

from typing import Any

from pulumi.errors import RunError
from pydantic import ValidationError

from .base import CONFIG_NAMESPACE, ESTATE_KEY, RuleViolations, Violation, config_path
from .estate import EstateSpec, Node
from .hosts import NfsExport, NodeGroup
from .proxy import L4Spec, L7Spec, Overlay
from .routes import Route
from .stacks import Routing, StackSpec

__all__ = [
    "CONFIG_NAMESPACE",
    "ESTATE_KEY",
    "EstateConfigError",
    "EstateSpec",
    "L4Spec",
    "L7Spec",
    "NfsExport",
    "Node",
    "NodeGroup",
    "Overlay",
    "Route",
    "Routing",
    "StackSpec",
    "Violation",
    "config_path",
    "format_violation",
    "load_estate",
]


class EstateConfigError(RunError):
    """The stack config breaks one or more rules; `problems` holds one line per broken rule.

    A RunError, so `pulumi preview` prints the lines without a Python traceback.
    """

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid estate configuration:\n" + "\n".join(f"  {p}" for p in problems))


def format_violation(v: Violation) -> str:
    return f"{config_path(v.path)}: {v.message}"


# Settings that existed once: a stack file written for an older release hears what became of them.
RETIRED: dict[tuple[str, ...], str] = {
    ("docker", "api_port"): "no longer exists: the swarm's API is a unix socket in docker.api_socket_dir, never a "
    "TCP port (any local process could reach one); delete the line",
}


def _pydantic_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, RuleViolations):
            problems += [f"{config_path(loc + v.path)}: {v.message}" for v in cause.violations]
            continue
        message = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if err["type"] == "extra_forbidden":
            message = RETIRED.get(tuple(str(part) for part in loc), "unknown setting (a typo? see the model in "
                                  "components/model/ for the allowed keys)")  # fmt: skip
        elif err["type"] == "literal_error":
            message = f"{err['input']!r} is not allowed here; use one of {(err.get('ctx') or {}).get('expected')}"
        elif err["type"] == "missing":
            message = "required setting is missing"
        problems.append(f"{config_path(loc)}: {message}")
    return problems


def load_estate(raw: Any) -> EstateSpec:
    """Validate the `swarm-estate:estate` object. Raises EstateConfigError naming each config path."""
    if not isinstance(raw, dict):
        raise EstateConfigError([f"{config_path(())}: must be an object (the whole estate), got {type(raw).__name__}"])
    try:
        return EstateSpec.model_validate(raw)
    except ValidationError as exc:
        raise EstateConfigError(_pydantic_problems(exc)) from None
