"""Stack config -> everything the program needs, read and validated before the first resource is registered:
the estate model (a branch template derived for this stack first), its imported stacks, the routes the L7 serves
and every warning. A bad config or compose file stops here with its path and rule; nothing is half-applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .compose.apply import import_stacks, routes_of
from .compose.spec import ImportedStack
from .model import EstateConfigError, EstateSpec, Route, format_violation, load_estate
from .model.branch import branch_metadata, derive_branch
from .model.routes import route_rules
from .platform_stacks import platform_stacks


@dataclass(frozen=True)
class Prepared:
    spec: EstateSpec
    stacks: dict[str, ImportedStack]  # the application stacks and the enabled platform stacks (registry, Portainer)
    routes: list[Route]
    warnings: list[str]
    branch: dict[str, Any] | None = None  # a branch stack's slot, source and creation time (the reaper reads them)


def prepare(raw: Any, project_dir: Path, stack: str, now: datetime | None = None) -> Prepared:
    """Raises EstateConfigError naming every broken rule. A branch template (Pulumi.ci.yaml, with a `branch:`
    section) is validated as written, then derived from the stack name and validated again."""
    template = load_estate(raw)
    spec = derive_branch(template, stack, now) if template.branch is not None else template
    imported = import_stacks(spec, project_dir)
    stacks = {**imported, **platform_stacks(spec)}
    routes = routes_of(spec, stacks)
    route_errors, route_warnings = route_rules(spec, routes)
    if route_errors:
        raise EstateConfigError([format_violation(v) for v in route_errors])
    warnings = [format_violation(w) for w in [*spec.warnings, *route_warnings]]
    warnings += [w for s in imported.values() for w in s.warnings]
    return Prepared(
        spec=spec,
        stacks=stacks,
        routes=routes,
        warnings=list(dict.fromkeys(warnings)),
        branch=branch_metadata(template, stack, now),
    )
