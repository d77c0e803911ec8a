"""Offline synth: run the program under Pulumi's mock engine and write what `pulumi up` would send.

    python -m tools.synth STACK --out DIR [--config FILE]

Writes DIR/resources.json (every RegisterResource request: type, name, parent, provider,
inputs, dependencies, options), DIR/outputs.json and DIR/files/ (every generated artifact
plus estate.mmd). Ids and computed outputs come from the mock engine and say so
(`<name>-id`, `<mock:…>`): nothing here is a result the real engine produced.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import runpy
import shutil
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.rpc import UNKNOWN as UNKNOWN_SENTINEL
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components import strict_yaml
from components.model import CONFIG_NAMESPACE, EstateConfigError

PROJECT_DIR = Path(__file__).resolve().parent.parent
PROJECT = "swarm-estate"
SECRET = "[secret]"
UNKNOWN = "[unknown]"
_SIG_KEY = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
_ASSET_SIG = "c44067f5952c0a294b673a41bacd8c17"
_ARCHIVE_SIG = "0def7320c3a5731c473e5ecbe6d01bc7"
_RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
_OPTION_FIELDS = ("protect", "deleteBeforeReplace", "retainOnDelete", "ignoreChanges", "replaceOnChanges")

# The Pulumi runtime keeps its settings in module globals: one program run at a time.
_RUN_LOCK = threading.Lock()


def _plain(value: Any) -> Any:
    """Protobuf-JSON of the engine's wire format -> readable JSON, secrets and unknowns redacted."""
    if isinstance(value, dict):
        sig = value.get(_SIG_KEY)
        if sig == _SECRET_SIG:
            return SECRET
        if sig == _RESOURCE_SIG:
            return {"resource": _name_of(str(value.get("urn", "")))}
        if sig in (_ASSET_SIG, _ARCHIVE_SIG):
            return {k: _plain(v) for k, v in value.items() if k != _SIG_KEY}
        return {k: _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value == UNKNOWN_SENTINEL:
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return int(value)  # the wire has only doubles; ports and counts read better as integers
    return value


def _name_of(urn: str) -> str:
    return urn.rsplit("::", 1)[-1] if urn else ""


def _type_of(urn: str) -> str:
    return urn.split("::")[2].split("$")[-1] if urn.count("::") >= 3 else ""


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """Sees each full RegisterResource request, which `Mocks.new_resource` is not given."""

    def __init__(self, mocks: pulumi_mocks.Mocks):
        super().__init__(mocks)
        self.requests: list[Any] = []

    def RegisterResource(self, request):  # noqa: N802 - the gRPC method name
        if request.type != "pulumi:pulumi:Stack":
            self.requests.append(request)
        return super().RegisterResource(request)


class FakeEngine(pulumi_mocks.Mocks):
    """Ids and computed outputs that cannot be mistaken for real ones.

    State echoes the inputs (as a provider would for input properties); the computed-only
    outputs the program reads are filled with `<mock:NAME.PROPERTY>` strings.
    """

    COMPUTED = {
        "command:local:Command": ("stdout", "stderr"),
        "command:remote:Command": ("stdout", "stderr"),
        "docker:index/remoteImage:RemoteImage": ("imageId", "repoDigest"),
        # a secret without a name of the program's gets one from the provider (autonaming)
        "docker:index/secret:Secret": ("name",),
    }

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str | None, dict]:
        state = dict(args.inputs)
        for prop in self.COMPUTED.get(args.typ, ()):
            state.setdefault(prop, f"<mock:{args.name}.{prop}>")
        return f"{args.name}-id", state

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict, list[tuple[str, str]]]:
        # Invokes read the world (the swarm layer's drift check runs `command:local:run`): offline there is
        # nothing to read, so they answer nothing, as an unreachable swarm does.
        return {}, []


@dataclass
class SynthResult:
    resources: list[dict[str, Any]]
    outputs: dict[str, Any]
    files: dict[str, str]
    warnings: list[str] = field(default_factory=list)

    def by_type(self, type_: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["type"] == type_]

    def critical_path(self, skip: frozenset[tuple[str, str]] = frozenset()) -> int:
        """Resources on the longest dependency chain: how many must be created one after another (`skip`: the
        (dependent, dependency) edges to leave out)."""
        deps = {r["name"]: [d for d in r["dependencies"] if (r["name"], d) not in skip] for r in self.resources}
        longest: dict[str, int] = {}

        def walk(name: str) -> int:
            if name not in longest:
                longest[name] = 1 + max((walk(d) for d in deps.get(name, []) if d in deps), default=0)
            return longest[name]

        return max((walk(n) for n in deps), default=0)

    def named(self, name: str) -> dict[str, Any]:
        matches = [r for r in self.resources if r["name"] == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} resources named {name!r}")
        return matches[0]


def _parent_name(urn: str) -> str | None:
    # Resources without an explicit parent hang off the implicit Stack; report that as null.
    return _name_of(urn) if urn and _type_of(urn) != "pulumi:pulumi:Stack" else None


def _record(request: Any, urn_names: dict[str, str]) -> dict[str, Any]:
    provider = request.provider.rsplit("::", 1)[0] if request.provider else ""  # a reference is URN::id
    deps = {_name_of(u) for u in request.dependencies}
    for prop_deps in request.propertyDependencies.values():
        deps.update(_name_of(u) for u in prop_deps.urns)
    options = {
        "protect": bool(request.protect) if request.HasField("protect") else False,
        "deleteBeforeReplace": bool(request.deleteBeforeReplace),
        "retainOnDelete": bool(request.retainOnDelete) if request.HasField("retainOnDelete") else False,
        "ignoreChanges": sorted(request.ignoreChanges),
        "replaceOnChanges": sorted(request.replaceOnChanges),
    }
    return {
        "type": request.type,
        "name": request.name,
        "parent": _parent_name(request.parent),
        "provider": _name_of(provider) or None,
        "custom": bool(request.custom),
        "inputs": _plain(json_format.MessageToDict(request.object)),
        "dependencies": sorted(deps - {""}),
        "options": options,
    }


def _resolve_outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    async def resolve() -> dict[str, Any]:
        resolved = {}
        for key, value in sorted(outputs.items()):
            out = pulumi.Output.from_input(value)
            if await out.is_secret():
                resolved[key] = SECRET
            elif not await out.is_known():
                resolved[key] = UNKNOWN
            else:
                resolved[key] = _plain(json.loads(json.dumps(await out.future(), default=str)))
        return resolved

    return _sync_await(resolve())


class _WarningCollector:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        def log(msg: str, *args: Any, **_: Any) -> None:
            if level in ("warning", "error"):
                self.messages.append(msg % args if args else msg)

        return log


def generated_files(built: Any) -> dict[str, str]:
    """The files a program's components generate (their `files`), from what the program function returned: a
    component, or a list of them."""
    parts = built if isinstance(built, (list, tuple)) else [built]
    files: dict[str, str] = {}
    for part in parts:
        files.update(getattr(part, "files", None) or {})
    for path in files:
        if path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"generated file {path!r} must be relative and stay inside files/")
    return dict(sorted(files.items()))


def run_function(
    fn: Callable[[], Any],
    config: dict[str, Any] | None = None,
    stack: str = "synth",
    monitor: RecordingMonitor | None = None,
) -> SynthResult:
    """Run `fn` as a Pulumi program under the recording mock engine; return what it registered, and the files
    of the component(s) `fn` returns.

    Pass your own `monitor` to inspect what was registered even when the program raises.
    """
    config = config or {}
    built: list[Any] = []
    with _RUN_LOCK:
        pulumi_settings.ROOT.set(None)
        engine = FakeEngine()
        monitor = monitor or RecordingMonitor(engine)
        logger = _WarningCollector()
        secret_keys = [k for k, v in config.items() if isinstance(v, _SecureValue)]
        pulumi.runtime.set_all_config({k: _config_text(v) for k, v in config.items()}, secret_keys=secret_keys)
        pulumi_mocks.set_mocks(engine, project=PROJECT, stack=stack, preview=False, monitor=monitor, logger=logger)  # type: ignore[arg-type]
        _sync_await(run_pulumi_func(lambda: built.append(fn())))
        root = pulumi_settings.get_root_resource()
        outputs = _resolve_outputs(dict(getattr(root, "outputs", {}) or {}))
        urn_names = {r.urn: _name_of(r.urn) for r in monitor.resources.values()}
        resources = [_record(req, urn_names) for req in monitor.requests]
        files = generated_files(built[0] if built else None)
        return SynthResult(resources=resources, outputs=outputs, files=files, warnings=logger.messages)


class _SecureValue(str):
    """A `secure:` value from a stack file: it cannot be decrypted offline."""


def _config_text(value: Any) -> str:
    if isinstance(value, _SecureValue):
        return UNKNOWN_SENTINEL
    if isinstance(value, str):
        return value
    return json.dumps(value)


def stack_config(path: Path) -> dict[str, Any]:
    """The `config:` block of a stack file as `{"swarm-estate:key": value}`; `secure:` values stay opaque."""
    doc = strict_yaml.load(path.read_text(), str(path)) or {}
    if not isinstance(doc, dict):
        raise strict_yaml.YamlError(f"{path}: a stack file is a mapping with a `config:` key")
    config: dict[str, Any] = {}
    for key, value in (doc.get("config") or {}).items():
        full = key if ":" in key else f"{CONFIG_NAMESPACE}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            config[full] = _SecureValue(value["secure"])
        else:
            config[full] = value
    return config


def secure(value: str) -> str:
    """Mark a config value as a `secure:` one, as a stack file would (for tests)."""
    return _SecureValue(value)


def run_program(
    config: dict[str, Any],
    stack: str = "synth",
    project_dir: Path = PROJECT_DIR,
    monitor: RecordingMonitor | None = None,
) -> SynthResult:
    """Run the project's `__main__.py` with this stack config under the mock engine."""
    main = project_dir / "__main__.py"
    cwd = os.getcwd()

    def program() -> Any:
        os.chdir(project_dir)  # `pulumi up` runs the program from the project directory
        try:
            return runpy.run_path(str(main), run_name="__pulumi_main__").get("estate")
        finally:
            os.chdir(cwd)

    return run_function(program, config, stack, monitor)


def write(result: SynthResult, out: Path) -> None:
    """Write atomically: a failed synth leaves the previous output (or nothing) in place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".synth-", dir=out.parent))
    try:
        resources = sorted(result.resources, key=lambda r: (r["type"], r["name"]))
        (staging / "resources.json").write_text(json.dumps(resources, indent=2, sort_keys=True) + "\n")
        (staging / "outputs.json").write_text(json.dumps(result.outputs, indent=2, sort_keys=True) + "\n")
        for rel, text in result.files.items():
            target = staging / "files" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def summary(result: SynthResult) -> str:
    counts = Counter(r["type"] for r in result.resources)
    lines = [f"{len(result.resources)} resources"]
    lines += [f"  {n:4d}  {t}" for t, n in sorted(counts.items())]
    lines.append(f"{len(result.files)} generated files")
    lines += [f"  files/{p}" for p in result.files]
    lines += [f"warning: {w}" for w in result.warnings]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.synth", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("stack", help="stack name: reads Pulumi.<stack>.yaml unless --config is given")
    parser.add_argument("--out", required=True, type=Path, help="output directory (replaced)")
    parser.add_argument("--config", type=Path, help="stack config file to synth instead of Pulumi.<stack>.yaml")
    args = parser.parse_args(argv)
    path = args.config or PROJECT_DIR / f"Pulumi.{args.stack}.yaml"
    if not path.exists():
        print(f"error: {path} does not exist", file=sys.stderr)
        return 2
    try:
        result = run_program(stack_config(path), stack=args.stack)
    except (EstateConfigError, strict_yaml.YamlError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except pulumi.RunError as exc:  # the program's own report of an internal error
        print(f"error: {exc}", file=sys.stderr)
        return 3
    finally:
        close_event_loops()
    write(result, args.out)
    print(summary(result))
    return 0


def close_event_loops() -> None:
    """Close the event loops the SDK leaves behind before the interpreter does. Besides the main thread's, the
    SDK makes one in each executor thread that awaits an output (`sync_await`); left to the garbage collector at
    exit, one of them could find its self-pipe already gone and print `Exception ignored in:
    BaseEventLoop.__del__`."""
    for obj in gc.get_objects():
        if isinstance(obj, asyncio.AbstractEventLoop) and not obj.is_closed() and not obj.is_running():
            obj.close()

if __name__ == "__main__":
    sys.exit(main())
