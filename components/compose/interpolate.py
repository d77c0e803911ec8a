"""`${VAR}` interpolation of a compose file from the stack config's `variables`.

The syntax is the one the Docker CLI's compose loader accepts: `$VAR`, `${VAR}`, `${VAR:-default}`,
`${VAR-default}`, `${VAR:?message}`, `${VAR?message}` and `$$` for a literal `$`. Values come
from the stack config only, never from the environment of whoever runs `pulumi up`, so two
operators deploying the same commit get the same services. Where Docker would quietly use an
empty string for an unset variable, this is an error: an empty image tag or host name deployed
to production is worse than a failed preview.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .problems import Problems

_PATTERN = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<invalid>))"
)


class InterpolationError(ValueError):
    pass


def interpolate_text(text: str, variables: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("named") or match.group("braced")
        if name is None:
            raise InterpolationError(f"invalid interpolation in {text!r}: write $$ for a literal $")
        op, arg = match.group("op"), match.group("arg") or ""
        value = variables.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in ("-", ":-"):
            return arg if empty else str(value)
        if op in ("?", ":?"):
            if empty:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return str(value)
        if value is None:
            raise InterpolationError(
                f"variable {name} is not set: add it to the stack's `variables`, or write ${{{name}:-default}}"
            )
        return str(value)

    return _PATTERN.sub(substitute, text)


def interpolate(node: Any, variables: Mapping[str, str], problems: Problems) -> Any:
    """Interpolate every string value (never a key) of a parsed YAML tree; report by key path."""
    if isinstance(node, dict):
        return {k: interpolate(v, variables, problems.at(str(k))) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, variables, problems.at(str(i))) for i, v in enumerate(node)]
    if isinstance(node, str) and "$" in node:
        try:
            return interpolate_text(node, variables)
        except InterpolationError as exc:
            problems.error(str(exc))
            return node
    return node
