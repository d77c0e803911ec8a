"""ReplayEngine: Pulumi's mock interface, answered by performing each registration for real.

The replay is a test harness, not the Pulumi engine: it performs the create path of each resource
(and, in `update` mode, service updates) the way the providers would, but it keeps no state, plans
no diff and computes no replacement.

The SDK registers a resource only once the outputs it takes as inputs are known, so the order is
the resource graph's, and independent registrations run concurrently (the SDK calls
`new_resource` from a thread pool), as under `pulumi up`:

- `pulumi:providers:docker`: its `host` is remembered; resources naming it as provider go there.
- `docker.Network/Volume/Container/RemoteImage/ServiceConfig/Secret/Service`: Docker Engine API
  calls on that host, bodies from `mapping` (an unmapped property fails, naming it).
- `command.local.Command`: `create` run by `/bin/sh -c` with `environment` and `stdin`;
  `command.remote.Command`: `create` over real SSH with the connection's key. Their real stdout
  and stderr are the outputs, so the join tokens printed by init reach the joins.

`teardown()` undoes everything in reverse order of creation (running the commands' `delete`,
as `pulumi destroy` would); `leftovers()` lists what an engine still holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulumi.runtime import mocks as pulumi_mocks

from . import mapping
from .api import API_VERSION, ApiError, DockerApi
from .mapping import Props, UnmappedPropertyError

COMMAND_TIMEOUT_S = 300
DELETE_TIMEOUT_S = 90
CONVERGE_POLL_S = 1.0
_SIG_KEY, _SECRET_SIG = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"
PREDEFINED_NETWORKS = {"bridge", "host", "none", "ingress", "docker_gwbridge"}


@dataclass
class Created:
    typ: str
    name: str
    ident: str
    host: str | None  # the docker endpoint, for docker resources
    # Hold secrets in the clear (join tokens, the generated TLS key): kept out of reprs and test logs.
    inputs: dict[str, Any] = field(repr=False)
    outputs: dict[str, Any] = field(repr=False)
    started: float
    finished: float


@dataclass
class Failure:
    typ: str
    name: str
    error: str


Hook = Callable[[Created], None]


@dataclass
class ReplayEngine(pulumi_mocks.Mocks):
    """Pass `on_created` to act between registrations (e.g. load images into a node once it is ready)."""

    ssh_options: list[str] = field(default_factory=list)
    on_created: Hook | None = None
    previous: ReplayEngine | None = None  # update mode: replay a second config against what this one made
    # Resources not performed (their outputs are their inputs, stdout empty): a test names each and says why.
    skip: Callable[[str, str], bool] | None = None
    created: list[Created] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._providers: dict[str, str] = {}
        self._apis: dict[str, DockerApi] = {}
        self.reused: list[str] = []
        self.dependencies: dict[str, set[str]] = {}  # resource name -> names it depends on (set by Replay.run)
        self.kept: list[str] = []
        self.skipped: list[str] = []
        self.updated: list[str] = []
        if self.previous is not None:
            self._providers.update(self.previous._providers)

    # --- the Mocks interface -----------------------------------------------------------------

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str | None, dict]:
        if not args.custom:
            return None, {}
        started = time.monotonic()
        try:
            ident, host, outputs = self._perform(args)
        except Exception as exc:
            with self._lock:
                self.failures.append(Failure(args.typ, args.name, f"{type(exc).__name__}: {exc}"))
            raise
        record = Created(args.typ, args.name, ident, host, dict(args.inputs), outputs, started, time.monotonic())
        with self._lock:
            self.created.append(record)
        if self.on_created is not None:
            try:
                self.on_created(record)
            except Exception as exc:
                with self._lock:
                    self.failures.append(Failure(args.typ, args.name, f"after create: {type(exc).__name__}: {exc}"))
                raise
        return ident, outputs

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict, list[tuple[str, str]] | None]:
        raise UnmappedPropertyError(f"the replay does not perform invokes ({args.token})")

    # --- dispatch ----------------------------------------------------------------------------

    def _perform(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, str | None, dict[str, Any]]:
        args.inputs = _integral(args.inputs)
        typ, inputs = args.typ, dict(args.inputs)
        if typ == "pulumi:providers:docker":
            p = Props(typ, "", inputs)
            host = p.get("host")
            p.ignore("sshOpts", "version")  # the replay's own SSH options apply to ssh:// hosts
            p.done()
            ident = f"{args.name}-provider"
            with self._lock:
                self._providers[ident] = host
            return ident, None, inputs
        if typ.startswith("pulumi:providers:"):
            return f"{args.name}-provider", None, inputs
        if self.skip is not None and self.skip(typ, args.name):
            with self._lock:
                self.skipped.append(args.name)
            return f"{args.name}-skipped", None, {**inputs, "stdout": "", "stderr": ""}
        previous = self._previous(typ, args.name)
        if previous is not None:
            outcome = self._update(previous, args)
            if outcome is not None:
                return outcome
        if typ in ("command:local:Command", "command:remote:Command"):
            return self._command(typ, args.name, inputs)
        handler = _DOCKER.get(typ)
        if handler is None:
            raise UnmappedPropertyError(f"the replay does not perform resources of type {typ} ({args.name})")
        host = self._host_of(args)
        ident, outputs = handler(self, self.api(host), Props(typ, "", inputs, resource=args.name))
        return ident, host, {**inputs, **outputs}

    def _host_of(self, args: pulumi_mocks.MockResourceArgs) -> str:
        ref = (args.provider or "").rsplit("::", 1)[-1]
        with self._lock:
            host = self._providers.get(ref)
        if host is None:
            raise UnmappedPropertyError(f"{args.typ} {args.name}: no explicit docker provider (not replayed)")
        return host

    def api(self, host: str) -> DockerApi:
        with self._lock:
            if host not in self._apis:
                self._apis[host] = DockerApi(host, self.ssh_options)
            return self._apis[host]

    # --- docker resources --------------------------------------------------------------------

    def _remote_image(self, api: DockerApi, p: Props) -> tuple[str, dict[str, Any]]:
        name = p.get("name")
        p.ignore("keepLocally", "forceRemove", "triggers", "pullTriggers")
        p.done()
        try:
            image = api.get(f"/images/{name}/json")
        except ApiError as exc:
            if exc.status != 404:
                raise
            # As the provider: a missing image is pulled (which fails on an offline machine).
            api.post("/images/create", fromImage=name)
            image = api.get(f"/images/{name}/json")
        digests = image.get("RepoDigests") or []
        return f"{image['Id']}{name}", {"imageId": image["Id"], "repoDigest": digests[0] if digests else ""}

    def _network(self, api: DockerApi, p: Props) -> tuple[str, dict[str, Any]]:
        created = api.post("/networks/create", mapping.network_body(p))
        return created["Id"], {}

    def _volume(self, api: DockerApi, p: Props) -> tuple[str, dict[str, Any]]:
        created = api.post("/volumes/create", mapping.volume_body(p))
        return created["Name"], {"mountpoint": created.get("Mountpoint", "")}

    def _container(self, api: DockerApi, p: Props) -> tuple[str, dict[str, Any]]:
        name, body, _, files, extra = mapping.container_body(p)
        created = api.post("/containers/create", body, name=name)
        ident = created["Id"]
        for endpoint in extra:
            connect = {"Container": ident, "EndpointConfig": endpoint["config"]}
            api.post(f"/networks/{endpoint['name']}/connect", connect)
        if files:
            api.upload(ident, files)
        api.post(f"/containers/{ident}/start")
        state = api.get(f"/containers/{ident}/json")["State"]
        if not state.get("Running"):  # the provider's must_run
            raise RuntimeError(f"container {name} is not running after start: {state}")
        return ident, {}

    def _service_config(self, api: DockerApi, p: Props) -> tuple[str, dict[str, Any]]:
        return api.post("/configs/create", mapping.config_body(p))["ID"], {}

    def _secret(self, api: DockerApi, p: Props) -> tuple[str, dict[str, Any]]:
        return api.post("/secrets/create", mapping.secret_body(p))["ID"], {}

    def _service(self, api: DockerApi, p: Props) -> tuple[str, dict[str, Any]]:
        converge = p.data.get("convergeConfig")
        ident = api.post("/services/create", mapping.service_spec(p))["ID"]
        if converge:
            try:
                self._converge(api, ident, converge)
            except Exception:
                # it exists even though `up` fails: the teardown must remove it
                now = time.monotonic()
                with self._lock:
                    self.created.append(Created(p.typ, p.resource, ident, api.host, p.data, {}, now, now))
                raise
        return ident, {}

    def _converge(self, api: DockerApi, service: str, converge: dict[str, Any]) -> None:
        """The provider's converge_config: wait until every desired task runs, within `timeout`."""
        timeout = (mapping.duration_ns(converge.get("timeout")) or 180 * 10**9) / 1e9
        delay = (mapping.duration_ns(converge.get("delay")) or 7 * 10**9) / 1e9
        deadline = time.monotonic() + timeout
        states: list[str] = []
        while time.monotonic() < deadline:
            spec = api.get(f"/services/{service}")["Spec"]
            tasks = api.get("/tasks", filters=_filters(service=[service], **{"desired-state": ["running"]}))
            states = [t["Status"]["State"] for t in tasks]
            want = spec["Mode"].get("Replicated", {}).get("Replicas", len(tasks))
            if len(tasks) >= want and all(s == "running" for s in states):
                return
            time.sleep(delay)
        raise RuntimeError(f"service {service} did not converge within {timeout:.0f}s: task states {states}")

    # --- commands ----------------------------------------------------------------------------

    def _command(self, typ: str, name: str, inputs: dict[str, Any]) -> tuple[str, None, dict[str, Any]]:
        p = Props(typ, "", inputs)
        create = p.get("create")
        p.ignore("update", "delete", "triggers", "logging", "addPreviousOutputInEnv")
        runner = self._runner(p)
        p.done()
        out = {**inputs, "stdout": "", "stderr": ""}
        if create is not None:
            out["stdout"], out["stderr"] = runner(create, f"{name} create")
        return f"{name}-{int(time.monotonic() * 1000)}", None, out

    def _runner(self, p: Props) -> Callable[[str, str], tuple[str, str]]:
        stdin = p.get("stdin")
        if p.typ == "command:local:Command":
            env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
            env.update(DOCKER_API_VERSION=API_VERSION, **(p.get("environment") or {}))
            cwd = p.get("dir")
            interpreter = p.get("interpreter") or ["/bin/sh", "-c"]
            return lambda script, what: _run([*interpreter, script], what, env=env, stdin=stdin, cwd=cwd)
        conn = p.sub("connection")
        if conn is None:
            raise UnmappedPropertyError(f"{p.typ}: no connection")
        if p.get("environment"):
            raise UnmappedPropertyError(f"{p.typ}: environment (needs AcceptEnv on the host) is not mapped")
        target = f"{conn.get('user', 'root')}@{conn.get('host')}"
        port = str(conn.get("port", 22))
        key = conn.get("privateKey")
        dials = int(conn.get("dialErrorLimit", 10))
        per_dial = int(conn.get("perDialTimeout", 15))
        conn.ignore("password", "privateKeyPassword", "agentSocketPath", "hostKey", "proxy")
        conn.done()

        def run(script: str, what: str) -> tuple[str, str]:
            with tempfile.TemporaryDirectory(prefix="se-key-") as tmp:
                options = list(self.ssh_options)
                if key:
                    key_file = Path(tmp) / "id"
                    key_file.write_text(key if key.endswith("\n") else key + "\n")
                    key_file.chmod(0o600)
                    options = ["-i", str(key_file), *options]
                options += ["-o", f"ConnectTimeout={per_dial}", "-p", port]
                for attempt in range(dials):
                    try:
                        return _run(["ssh", *options, target, script], what, stdin=stdin)
                    except _DialError:
                        if attempt == dials - 1:
                            raise
                        time.sleep(1)
            raise AssertionError("unreachable")

        return run

    # --- update mode -------------------------------------------------------------------------

    def _previous(self, typ: str, name: str) -> Created | None:
        if self.previous is None:
            return None
        found = [c for c in self.previous.created if c.typ == typ and c.name == name]
        return found[-1] if found else None

    def _update(self, old: Created, args: pulumi_mocks.MockResourceArgs) -> tuple[str, str | None, dict] | None:
        """Same inputs: reuse. A changed docker.Service: a real service update. Anything else that
        changed is created anew when its name changed (content-named configs) or refused."""
        inputs = dict(args.inputs)
        if inputs == old.inputs:
            with self._lock:
                self.reused.append(args.name)
            return old.ident, old.host, old.outputs
        if args.typ == "docker:index/service:Service":
            assert old.host is not None
            api = self.api(old.host)
            current = api.get(f"/services/{old.ident}")
            spec = mapping.service_spec(Props(args.typ, "", inputs))
            api.post(f"/services/{old.ident}/update", spec, version=current["Version"]["Index"])
            if inputs.get("convergeConfig"):
                self._converge(api, old.ident, inputs["convergeConfig"])
            with self._lock:
                self.updated.append(args.name)
            return old.ident, old.host, {**inputs}
        if inputs.get("name") != old.inputs.get("name") and args.typ in _RENAMED_ON_CHANGE:
            return None  # a new object next to the old one, as a replacement would create it
        raise UnmappedPropertyError(f"update replay: {args.typ} {args.name} changed; only service updates are replayed")

    # --- teardown ----------------------------------------------------------------------------

    def teardown(self, run_command_deletes: bool = True) -> list[str]:
        """Delete what this replay created, newest first; return the errors (empty when clean).

        As `pulumi destroy`, a command is not deleted (its delete step does not run) once something
        that depends on it failed to delete; those are listed in `kept`. Unlike it, docker objects
        are removed regardless, so the engines end clean even then.
        """
        errors = []
        blocked: set[str] = set()
        with self._lock:
            records = list(reversed(self.created))
            self.created = []
        for record in records:
            if (self.previous is not None and record.name in self.reused) or record.name in self.skipped:
                continue
            dependents = {n for n, deps in self.dependencies.items() if record.name in deps}
            if record.typ.startswith("command:") and dependents & blocked:
                self.kept.append(record.name)
                blocked.add(record.name)
                continue
            try:
                self.delete(record, run_command_deletes)
            except Exception as exc:
                blocked.add(record.name)
                errors.append(f"{record.typ} {record.name}: {type(exc).__name__}: {exc}")
        return errors

    def delete(self, record: Created, run_command_deletes: bool = True) -> None:
        if record.typ.startswith("command:"):
            script = record.inputs.get("delete")
            if run_command_deletes and script:
                runner = self._runner(Props(record.typ, "", dict(record.inputs)))
                runner(script, f"{record.name} delete")
            return
        if record.host is None or record.typ == "docker:index/remoteImage:RemoteImage":
            return  # keepLocally images stay, as with the provider
        api = self.api(record.host)
        path = _DELETE_PATHS[record.typ].format(record.ident)
        deadline = time.monotonic() + DELETE_TIMEOUT_S
        while True:
            try:
                api.delete(path, **({"force": "1", "v": "1"} if "container" in record.typ else {}))
                break
            except ApiError as exc:
                if exc.status == 404:
                    break
                # a network or config still used by a task that is shutting down: retry for a while
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        if record.typ == "docker:index/service:Service":
            _wait(lambda: not _tasks(api, record.ident), DELETE_TIMEOUT_S, f"tasks of service {record.name} to go")

    def close(self) -> None:
        for api in self._apis.values():
            api.close()


_DOCKER: dict[str, Callable[[ReplayEngine, DockerApi, Props], tuple[str, dict[str, Any]]]] = {
    "docker:index/remoteImage:RemoteImage": ReplayEngine._remote_image,
    "docker:index/network:Network": ReplayEngine._network,
    "docker:index/volume:Volume": ReplayEngine._volume,
    "docker:index/container:Container": ReplayEngine._container,
    "docker:index/serviceConfig:ServiceConfig": ReplayEngine._service_config,
    "docker:index/secret:Secret": ReplayEngine._secret,
    "docker:index/service:Service": ReplayEngine._service,
}
_DELETE_PATHS = {
    "docker:index/network:Network": "/networks/{}",
    "docker:index/volume:Volume": "/volumes/{}",
    "docker:index/container:Container": "/containers/{}",
    "docker:index/serviceConfig:ServiceConfig": "/configs/{}",
    "docker:index/secret:Secret": "/secrets/{}",
    "docker:index/service:Service": "/services/{}",
}
_RENAMED_ON_CHANGE = {"docker:index/serviceConfig:ServiceConfig", "docker:index/secret:Secret", "command:local:Command"}


class _DialError(RuntimeError):
    pass


def _run(
    argv: list[str], what: str, *, env: dict[str, str] | None = None, stdin: str | None = None, cwd: str | None = None
) -> tuple[str, str]:
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, env=env, input=stdin, cwd=cwd, timeout=COMMAND_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{what}: no answer within {COMMAND_TIMEOUT_S}s") from exc
    if argv[0] == "ssh" and result.returncode == 255:
        raise _DialError(f"{what}: ssh could not connect: {result.stderr.strip()[-500:]}")
    if result.returncode != 0:
        # stderr only: the scripts keep secrets (tokens) on stdout
        raise RuntimeError(f"{what} exited {result.returncode}: {result.stderr.strip()[-2000:]}")
    # The command provider trims one trailing newline from both streams.
    return result.stdout.removesuffix("\n"), result.stderr.removesuffix("\n")


def _integral(value: Any) -> Any:
    """The wire carries every number as a double: give ports, counts and modes back as integers.
    Secrets arrive wrapped; the replay must use their values (it never logs them)."""
    if isinstance(value, dict):
        if value.get(_SIG_KEY) == _SECRET_SIG:
            return _integral(value.get("value"))
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _filters(**values: list[str]) -> str:
    return json.dumps(values)


def _tasks(api: DockerApi, service: str) -> list[dict[str, Any]]:
    try:
        return api.get("/tasks", filters=_filters(service=[service]))
    except ApiError as exc:
        if exc.status == 404:  # the service is gone, and its tasks with it
            return []
        raise


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(CONVERGE_POLL_S)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def leftovers(api: DockerApi) -> dict[str, list[str]]:
    """What an engine still holds: containers, volumes, and networks other than the predefined ones."""
    return {
        "containers": [c["Names"][0].lstrip("/") for c in api.get("/containers/json", all="1")],
        "volumes": [v["Name"] for v in (api.get("/volumes").get("Volumes") or [])],
        "networks": [n["Name"] for n in api.get("/networks") if n["Name"] not in PREDEFINED_NETWORKS],
    }
