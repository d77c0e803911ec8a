"""Stack config -> everything the program needs, read and validated before the first resource is registered:
the estate model (a branch template derived for this stack first), its imported stacks, the routes the L7 serves
and every warning. A bad config or compose file stops here with its path and rule; nothing is half-applied.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .compose.apply import collect_stacks, publications_of, routes_of
from .compose.problems import Problems
from .compose.spec import ImportedStack
from .model import (
    CONFIG_NAMESPACE,
    ESTATE_KEY,
    EstateConfigError,
    EstateSpec,
    Route,
    config_path,
    format_violation,
    load_estate,
)
from .model.base import secret_refs
from .model.branch import branch_metadata, derive_branch
from .model.ports import port_rules
from .model.routes import route_rules
from .platform_stacks import platform_stacks


@dataclass(frozen=True)
class Prepared:
    spec: EstateSpec
    stacks: dict[str, ImportedStack]  # the application stacks and the enabled platform stacks (registry, Portainer)
    routes: list[Route]
    warnings: list[str]
    branch: dict[str, Any] | None = None  # a branch stack's slot, source and creation time (the reaper reads them)


def prepare(
    raw: Any,
    project_dir: Path,
    stack: str,
    now: datetime | None = None,
    config_keys: Collection[str] | None = None,
) -> Prepared:
    """Raises EstateConfigError naming every broken rule. A branch template (Pulumi.ci.yaml, with a `branch:`
    section) is validated as written, then derived from the stack name and validated again.

    `config_keys`: every config key the stack sets (`swarm-estate:estate` included). Given, the estate's absence
    is explained by what is there instead, and every secret the estate names must be set."""
    if config_keys is not None:
        _require_estate(raw, config_keys)
    template = load_estate(raw)
    spec = derive_branch(template, stack, now) if template.branch is not None else template
    if config_keys is not None:
        _require_secrets(spec, config_keys)
    # One pass: every file's own problems, and the estate-level checks of all of them (routes, ports), together.
    problems = Problems()
    imported = collect_stacks(spec, project_dir, problems)
    stacks = {**imported, **platform_stacks(spec)}
    routes = routes_of(spec, stacks)
    route_errors, route_warnings = route_rules(spec, routes)
    port_errors, port_warnings = port_rules(spec, publications_of(stacks))
    errors = [*problems.errors, *(format_violation(v) for v in route_errors), *port_errors]
    if errors:
        raise EstateConfigError(list(dict.fromkeys(errors)))
    warnings = [format_violation(w) for w in [*spec.warnings, *route_warnings]]
    warnings += [w for s in imported.values() for w in s.warnings]
    warnings += port_warnings
    return Prepared(
        spec=spec,
        stacks=stacks,
        routes=routes,
        warnings=list(dict.fromkeys(warnings)),
        branch=branch_metadata(template, stack, now),
    )


def _require_estate(raw: Any, config_keys: Collection[str]) -> None:
    where = f"{CONFIG_NAMESPACE}:{ESTATE_KEY}"
    if raw is None:
        ours = sorted(k for k in config_keys if k.startswith(f"{CONFIG_NAMESPACE}:"))
        near = [k for k in ours if k.split(":", 1)[1].lower().startswith(ESTATE_KEY[:4])]
        if near:
            hint = f"the stack sets {', '.join(near)}: a typo for {where}?"
        elif ours:
            hint = f"the stack sets only {', '.join(ours)}"
        else:
            hint = f"the stack sets no {CONFIG_NAMESPACE}: key at all"
        raise EstateConfigError([f"{where} is not set ({hint}); the whole estate is described there, see "
                                 "Pulumi.dev.yaml for an example"])  # fmt: skip
    if not isinstance(raw, dict) or not raw:
        raise EstateConfigError([f"{where}: the estate is empty or not a mapping (name, domain, substrate, …)"])


def _require_secrets(spec: EstateSpec, config_keys: Collection[str]) -> None:
    missing = [
        f"{config_path(path)}: names the secret config key {key}, which this stack does not set: run "
        f"`pulumi config set --secret {key}` (the value from your secret store)"
        for path, key in secret_refs(spec)
        if f"{CONFIG_NAMESPACE}:{key}" not in config_keys
    ]
    if missing:
        raise EstateConfigError(missing)
