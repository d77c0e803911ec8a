"""The real Pulumi engine for the tests: the CLI from `tools/toolchain`, a file backend in a temp directory.

    stack = PulumiStack.create(workdir, "dev", config)   # stack init + a config file of the test's own
    steps = stack.preview()                             # `pulumi preview --json`: the engine's planned steps
    stack.up()                                          # `pulumi up --yes`
    stack.preview(expect_no_changes=True)
    stack.set_config(other)                             # a new config: the next preview shows the change
    stack.destroy(); stack.remove()

Every command runs the repository's own program in a project directory of the test's own: links to the
repository's `Pulumi.yaml`, `__main__.py`, `components/`, `stacks/` and `venv`, beside the test's stack file,
so nothing is written into the checkout.
What the tests assert on is what the engine reports: steps with their op, URN and diffs, the state file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from .project import ROOT

PROJECT = "swarm-estate"
PASSPHRASE = "swarm-estate-tests"  # a test backend's secrets provider: known, and never a real secret
DEFAULT_TIMEOUT_S = 1800
STACK_SCOPED = {("stack", "output"), ("stack", "export"), ("stack", "history"), ("stack", "tag")}


class PulumiError(RuntimeError):
    def __init__(self, args: list[str], result: subprocess.CompletedProcess[str]):
        tail = (result.stdout[-6000:] + "\n" + result.stderr[-4000:]).strip()
        super().__init__(f"pulumi {' '.join(args)} exited {result.returncode}:\n{tail}")
        self.result = result


@cache
def toolchain_bin() -> Path:
    """The directory `tools/toolchain` fills with the CLI, the language host and the providers (built once)."""
    result = subprocess.run(
        ["bash", str(ROOT / "tools" / "toolchain")], capture_output=True, text=True, timeout=3600, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"tools/toolchain failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Step:
    """One step of `pulumi preview --json`, as the engine planned it."""

    op: str
    urn: str
    type: str
    name: str
    diffs: tuple[str, ...]
    replace_keys: tuple[str, ...]
    detailed: dict[str, Any]
    old_inputs: dict[str, Any]
    new_inputs: dict[str, Any]

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Step:
        urn = raw["urn"]
        return cls(
            op=raw["op"],
            urn=urn,
            type=urn.split("::")[-2].split("$")[-1],
            name=urn.rsplit("::", 1)[-1],
            diffs=tuple(raw.get("diffs") or ()),
            replace_keys=tuple(raw.get("keys") or ()),
            detailed=raw.get("detailedDiff") or {},
            old_inputs=(raw.get("oldState") or {}).get("inputs") or {},
            new_inputs=(raw.get("newState") or {}).get("inputs") or {},
        )

    def input_changes(self) -> list[str]:
        """Property paths of the detailed diff that the program's inputs account for.

        On any update of a `docker.Service`, the bridge's plan also reports optional maps the program never set
        (`taskSpec.containerSpec.env`, `…sysctl`) as added with an unknown value; they are absent from the inputs
        before and after, and nothing changes for them. Those entries are left out here."""
        return sorted(
            path
            for path, d in self.detailed.items()
            if d.get("kind") not in ("add", "add-replace")
            or _lookup(self.new_inputs, path) is not None
            or _lookup(self.old_inputs, path) is not None
        )


def _lookup(doc: Any, path: str) -> Any:
    """The value at a property path like `a.b[0].c` (None when any part is missing)."""
    for part in re.findall(r"[^.\[\]]+", path):
        if isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        elif isinstance(doc, dict) and part in doc:
            doc = doc[part]
        else:
            return None
    return doc


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    summary: dict[str, int]
    diagnostics: tuple[dict[str, Any], ...]

    def changed(self) -> list[Step]:
        """Every step that is not `same` (reads and the root stack's no-op included only if they change)."""
        return [s for s in self.steps if s.op not in ("same", "read")]

    def ops(self) -> dict[str, str]:
        """Resource name -> op of every step that changes something; a replacement shows as `replace`."""
        out: dict[str, str] = {}
        for step in self.changed():
            if step.op in ("create-replacement", "delete-replaced", "replace"):
                out[step.name] = "replace"
            elif step.name not in out:
                out[step.name] = step.op
        return out

    def by_name(self, name: str) -> list[Step]:
        return [s for s in self.steps if s.name == name]


PROJECT_FILES = ("Pulumi.yaml", "__main__.py", "components", "stacks", "tools", "venv")


def project_copy(where: Path, *, copy: bool = False) -> Path:
    """A project directory that runs the repository's program but keeps its own stack files: links to the
    repository's files, or (`copy`) a copy of them, for tools that find the project from their own location."""
    where.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        target = where / name
        if target.exists() or target.is_symlink():
            continue
        if copy and name != "venv":
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / name, target)
        else:
            target.symlink_to(ROOT / name)
    return where


def cli_env(workdir: Path, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the Pulumi CLI for a test: the toolchain first on PATH, a file backend and Pulumi home
    under `workdir`, the test passphrase, no update checks and no plugin downloads. A PATH in `extra_env` is
    put in front of the toolchain's."""
    (workdir / "backend").mkdir(parents=True, exist_ok=True)
    extra = dict(extra_env or {})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    path = ":".join(p for p in (extra.pop("PATH", ""), str(toolchain_bin()), env.get("PATH", "")) if p)
    env.update(
        PATH=path,
        PULUMI_HOME=str(workdir / "home"),
        PULUMI_BACKEND_URL=f"file://{workdir / 'backend'}",
        PULUMI_CONFIG_PASSPHRASE=PASSPHRASE,
        PULUMI_SKIP_UPDATE_CHECK="true",
        PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
        PULUMI_SKIP_CONFIRMATIONS="true",
        # makes `--event-log` available: the engine's own record of the order it finished steps in
        PULUMI_DEBUG_COMMANDS="true",
        NO_COLOR="1",
        **extra,
    )
    return env


@dataclass
class PulumiStack:
    workdir: Path
    name: str
    env: dict[str, str]
    project: Path
    history: list[str] = field(default_factory=list)

    @property
    def config_file(self) -> Path:
        return self.project / f"Pulumi.{self.name}.yaml"

    @classmethod
    def create(
        cls,
        workdir: Path,
        name: str,
        config: dict[str, Any],
        *,
        secrets: dict[str, str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> PulumiStack:
        """A new stack in a file backend under `workdir`, with `config` (plain values) and `secrets`
        (set with `pulumi config set --secret`, so the config file holds ciphertext as a user's would)."""
        env = cli_env(workdir, extra_env)
        stack = cls(workdir=workdir, name=name, env=env, project=project_copy(workdir / "project"))
        stack.run("stack", "init", name, "--secrets-provider", "passphrase")
        stack.set_config(config, secrets=secrets)
        return stack

    # --- running the CLI ---------------------------------------------------------------------------

    def run(
        self, *args: str, timeout: float = DEFAULT_TIMEOUT_S, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = ["pulumi", *args, "--non-interactive"]
        if args[0] in ("up", "preview", "refresh", "destroy", "config") or args[:2] in STACK_SCOPED:
            cmd += ["--stack", self.name]
        started = time.monotonic()
        result = subprocess.run(
            cmd,
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            check=False,
        )
        self.history.append(f"{' '.join(args)} -> {result.returncode} in {time.monotonic() - started:.1f}s")
        # every run's whole output, kept beside the backend for a post-mortem (pytest keeps its temp dirs)
        log = self.workdir / "logs" / f"{len(self.history):03d}-{args[0]}.log"
        log.parent.mkdir(exist_ok=True)
        command = " ".join(a for a in args if a != input)
        log.write_text(f"$ pulumi {command}\n{result.stdout}\n--- stderr\n{result.stderr}")
        if check and result.returncode != 0:
            raise PulumiError(list(args), result)
        return result

    def set_config(self, config: dict[str, Any], *, secrets: dict[str, str] | None = None) -> None:
        """Replace the stack's config: `config` written as YAML, each secret encrypted by the CLI. The stack
        file's other keys (the passphrase's salt) stay."""
        doc = yaml.safe_load(self.config_file.read_text()) if self.config_file.exists() else None
        doc = {**(doc or {}), "config": config}
        self.config_file.write_text(yaml.safe_dump(doc, sort_keys=True))
        for key, value in (secrets or {}).items():
            # on stdin: multi-line values (keys, PEM bundles) go in whole, and the value never reaches a command
            # line, a process list or an error message
            self.run("config", "set", "--secret", key, input=value)

    # --- operations ----------------------------------------------------------------------------------

    def preview(self, *, expect_no_changes: bool = False, refresh: bool = False) -> Plan:
        args = ["preview", "--json", "--diff"]
        if expect_no_changes:
            args.append("--expect-no-changes")
        if refresh:
            args.append("--refresh")
        result = self.run(*args, check=False)
        try:
            doc = json.loads(result.stdout)
        except json.JSONDecodeError:
            raise PulumiError(args, result) from None
        plan = Plan(
            steps=tuple(Step.of(s) for s in doc.get("steps", [])),
            summary=doc.get("changeSummary", {}),
            diagnostics=tuple(doc.get("diagnostics", [])),
        )
        if result.returncode != 0:
            errors = [d.get("message", "") for d in plan.diagnostics if d.get("severity") == "error"]
            changed = [f"{s.op} {s.name} {s.diffs}" for s in plan.changed()]
            raise PulumiError(
                args,
                subprocess.CompletedProcess(result.args, result.returncode, "\n".join(errors + changed), result.stderr),
            )
        return plan

    def up(self, *extra: str, timeout: float = DEFAULT_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return self.run("up", "--yes", "--skip-preview", "--diff", *extra, timeout=timeout)

    def refresh(self) -> subprocess.CompletedProcess[str]:
        return self.run("refresh", "--yes", "--skip-preview")

    def destroy(self, timeout: float = DEFAULT_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return self.run("destroy", "--yes", "--skip-preview", timeout=timeout)

    def remove(self) -> None:
        self.run("stack", "rm", self.name, "--yes", "--force", check=False)

    def last_update_changes(self) -> dict[str, int]:
        """The resource changes the engine recorded for the newest update (`pulumi stack history`)."""
        history = json.loads(self.run("stack", "history", "--json", "--show-secrets=false").stdout)
        return history[0]["resourceChanges"]

    def outputs(self, show_secrets: bool = False) -> dict[str, Any]:
        args = ["stack", "output", "--json"] + (["--show-secrets"] if show_secrets else [])
        return json.loads(self.run(*args).stdout or "{}")

    def state(self) -> dict[str, Any]:
        """The stack's checkpoint as `pulumi stack export` gives it (secrets as ciphertext)."""
        return json.loads(self.run("stack", "export").stdout)

    def state_file(self) -> Path:
        """The file the backend keeps the stack in (what an attacker with the bucket would read)."""
        found = list((self.workdir / "backend" / ".pulumi" / "stacks").rglob(f"{self.name}.json"))
        if not found:
            raise FileNotFoundError(f"no state file for stack {self.name} under {self.workdir / 'backend'}")
        return found[0]

    def resources(self) -> list[dict[str, Any]]:
        return self.state()["deployment"].get("resources", [])

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def phases(event_log: Path, started: float, kinds: dict[str, str]) -> dict[str, float]:
    """Seconds from `started` (a time.time()) until the last resource whose name matches each kind's pattern
    finished, from the engine's own event log (`pulumi up --event-log`)."""
    done: dict[str, float] = {}
    for line in event_log.read_text().splitlines():
        event = json.loads(line)
        outputs = event.get("resOutputsEvent")
        if not outputs:
            continue
        name = outputs["metadata"]["urn"].rsplit("::", 1)[-1]
        for kind, pattern in kinds.items():
            if re.search(pattern, name):
                done[kind] = max(done.get(kind, 0.0), event["timestamp"] - started)
    return done
