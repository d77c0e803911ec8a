"""The one way the compose import reports: a collector that knows where it is looking.

Everything found wrong (an error) or worth saying (a warning) in any stack's compose file or stack
config lands in one pair of lists, so one preview shows every fix. A collector is narrowed with
`at(...)` as the import walks down a file or a config, and each line names where it was found:

    stacks/app/docker-compose.yml: service web: deploy.replicas: 'x' is not a whole number
    swarm-estate:estate.stacks.app.services.web.http_port: give the HTTP port: …
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..model import config_path

Where = tuple[str | int, ...]


def _in_file(file: str) -> Callable[[Where], str]:
    def place(where: Where) -> str:
        if not where:
            return file
        if where[0] == "services" and len(where) >= 2:  # as `docker stack deploy` names a service
            inner = ".".join(str(w) for w in where[2:])
            return f"{file}: service {where[1]}" + (f": {inner}" if inner else "")
        return f"{file}: {'.'.join(str(w) for w in where)}"

    return place


@dataclass
class Problems:
    """Collects errors and warnings; `at`, `in_file` and `in_config` give narrower views on the same lists."""

    place: Callable[[Where], str] = config_path
    where: Where = ()
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def at(self, *where: str | int) -> Problems:
        return Problems(self.place, (*self.where, *where), self.errors, self.warnings)

    def in_file(self, file: str) -> Problems:
        """Places in a compose file, named `<file>: <section>.<key>` (or `service <name>: <key>`)."""
        return Problems(_in_file(file), (), self.errors, self.warnings)

    def in_config(self, *path: str | int) -> Problems:
        """Places in the stack config, named by their Pulumi config path."""
        return Problems(config_path, path, self.errors, self.warnings)

    def error(self, message: str) -> None:
        self.errors.append(f"{self.place(self.where)}: {message}")

    def warn(self, message: str) -> None:
        self.warnings.append(f"{self.place(self.where)}: {message}")
