"""The ``pulumirpc.LanguageRuntime`` service for Python programs.

Methods the CLI uses for ``up``/``preview``/``refresh``/``destroy``/``stack``/``about``/``install`` are implemented
after the Go host (``sdk/python/cmd/pulumi-language-python/main.go``); the rest (code generation, packing, linking,
running plugins, templates, debugging) are inherited from the generated servicer and answer UNIMPLEMENTED, which the
engine treats as "not supported" where it can.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import NoReturn

import grpc
from google.protobuf import empty_pb2
from pulumi.runtime.proto import language_pb2, language_pb2_grpc, plugin_pb2
from typing_extensions import override

from pulumi_langhost.packages import required_packages
from pulumi_langhost.streams import EngineLogSink, ResponseStreamSink
from pulumi_langhost.toolchain import (
    LanguageHostError,
    PipToolchain,
    PythonOptions,
    exit_status,
    parse_options,
    parse_python_version,
)

log = logging.getLogger(__name__)

# The executor exits with this code after it has already shown the user an actionable error (an unhandled exception
# with its traceback, a missing __main__.py): the engine is told to "bail" and add no message of its own.
EXIT_AFTER_USER_ACTIONABLE_MESSAGE = 32

# The oldest Python the Go host accepts without complaint.
_MINIMUM_PYTHON = (3, 7)


def _version() -> str:
    """Reported by GetPluginInfo: the version of the Pulumi Python SDK this host was built against."""
    try:
        return importlib.metadata.version("pulumi")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def _fail(context: grpc.ServicerContext, err: Exception) -> NoReturn:
    """End the RPC with the error, as a Go handler returning ``err`` does (status UNKNOWN, message = the error)."""
    context.abort(grpc.StatusCode.UNKNOWN, str(err))
    raise AssertionError("unreachable: ServicerContext.abort raises")


class PythonLanguageRuntime(language_pb2_grpc.LanguageRuntimeServicer):
    def __init__(
        self, executor: str, engine_address: str, tracing: str, on_engine_address: Callable[[str], None]
    ) -> None:
        self._executor = executor
        self._tracing = tracing
        self._lock = threading.Lock()
        self._engine_address = engine_address
        self._on_engine_address = on_engine_address

    @property
    def engine_address(self) -> str:
        with self._lock:
            return self._engine_address

    @override
    def Handshake(
        self, request: language_pb2.LanguageHandshakeRequest, context: grpc.ServicerContext
    ) -> language_pb2.LanguageHandshakeResponse:
        # Only used when the engine attaches to an already running host (PULUMI_DEBUG_LANGUAGES); a host it launches
        # itself gets the engine's address as its argument instead.
        with self._lock:
            self._engine_address = request.engine_address
        self._on_engine_address(request.engine_address)
        return language_pb2.LanguageHandshakeResponse()

    @override
    def GetPluginInfo(self, request: empty_pb2.Empty, context: grpc.ServicerContext) -> plugin_pb2.PluginInfo:
        return plugin_pb2.PluginInfo(version=_version())

    @override
    def GetRequiredPackages(
        self, request: language_pb2.GetRequiredPackagesRequest, context: grpc.ServicerContext
    ) -> language_pb2.GetRequiredPackagesResponse:
        try:
            options = parse_options(request.info)
            toolchain = PipToolchain(options)
            # As the Go host does, a missing virtual environment is created here, its output sent to the engine
            # as ephemeral log messages, so that plugin discovery sees the installed packages.
            if options.virtualenv and self.engine_address:
                sink = EngineLogSink(self.engine_address)
                try:
                    toolchain.ensure_venv(options.program_dir, sink)
                finally:
                    sink.close()
            _warn_on_old_python(toolchain)
            packages = required_packages(toolchain)
        except LanguageHostError as err:
            _fail(context, err)
        log.debug("GetRequiredPackages: %s", [(p.name, p.version) for p in packages])
        return language_pb2.GetRequiredPackagesResponse(packages=packages)

    @override
    def Run(self, request: language_pb2.RunRequest, context: grpc.ServicerContext) -> language_pb2.RunResponse:
        engine_address = self.engine_address
        if not engine_address:
            _fail(context, LanguageHostError("when debugging or running explicitly, must call Handshake before Run"))
        if request.attach_debugger:
            # The Go host starts the program under debugpy; this stand-in does not.
            return language_pb2.RunResponse(error="attaching a debugger is not supported by this language host")
        try:
            options = parse_options(request.info)
            toolchain = PipToolchain(options)
            toolchain.validate_venv()
            argv, env = toolchain.command([self._executor, *self._executor_arguments(request, engine_address)])
            if request.config:
                env["PULUMI_CONFIG"] = json.dumps(dict(request.config), sort_keys=True)
            env["PULUMI_CONFIG_SECRET_KEYS"] = json.dumps(list(request.configSecretKeys))
            if options.typechecker:
                _typecheck(toolchain, options)
        except LanguageHostError as err:
            _fail(context, err)

        log.debug("Language host launching process: %s", " ".join(argv))
        # The program's stdout and stderr are this process's own, which the engine reads line by line and shows
        # (stdout as info, stderr as info-on-stderr), as the Go host does by handing os.Stdout/os.Stderr over.
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
        except OSError as err:
            return language_pb2.RunResponse(error=f"problem executing program (could not run language executor): {err}")

        def kill_if_cancelled() -> None:
            # Runs when the RPC ends; if the engine cancelled it, the program is stopped (exec.CommandContext).
            if proc.poll() is None:
                proc.kill()

        context.add_callback(kill_if_cancelled)
        code = proc.wait()
        if code == 0:
            return language_pb2.RunResponse()
        if code == EXIT_AFTER_USER_ACTIONABLE_MESSAGE:
            return language_pb2.RunResponse(bail=True)
        # Go's WaitStatus.ExitStatus() is -1 for a process killed by a signal.
        return language_pb2.RunResponse(error=f"program exited with non-zero exit code: {max(code, -1)}")

    def _executor_arguments(self, request: language_pb2.RunRequest, engine_address: str) -> list[str]:
        """The executor's command line, in the Go host's order; empty values are left out."""
        args: list[str] = []
        for flag, value in (
            ("monitor", request.monitor_address),
            ("engine", engine_address),
            ("project", request.project),
            ("root_directory", request.info.root_directory),
            ("stack", request.stack),
            ("pwd", request.pwd),
            ("dry_run", "true" if request.dryRun else "false"),
            ("parallel", str(request.parallel)),
            ("tracing", self._tracing),
            ("organization", request.organization),
        ):
            if value:
                args += [f"--{flag}", value]
        # The engine passes the entry point relative to the program directory ("." for __main__.py); the executor
        # changes into --pwd before running it.
        args.append(request.info.entry_point or request.program or ".")
        args += list(request.args)
        return args

    @override
    def InstallDependencies(
        self, request: language_pb2.InstallDependenciesRequest, context: grpc.ServicerContext
    ) -> Iterator[language_pb2.InstallDependenciesResponse]:
        try:
            options = parse_options(request.info)
        except LanguageHostError as err:
            _fail(context, err)
        # Plugins are never run from the ambient interpreter, so they get a "venv" by default.
        if request.is_plugin and not options.virtualenv:
            options = PythonOptions(options.root, options.program_dir, "venv", options.typechecker, options.toolchain)
        toolchain = PipToolchain(options)
        sink = ResponseStreamSink(terminal=request.is_terminal)
        failure: list[Exception] = []

        def work() -> None:
            try:
                sink.write_out(b"Installing dependencies...\n\n")
                toolchain.install_dependencies(options.program_dir, sink)
                sink.write_out(b"Finished installing dependencies\n\n")
            except Exception as err:  # reported to the engine below
                failure.append(err)
            finally:
                sink.finish()

        threading.Thread(target=work, name="install-dependencies", daemon=True).start()
        yield from sink.responses()
        if failure:
            _fail(context, failure[0])

    @override
    def RuntimeOptionsPrompts(
        self, request: language_pb2.RuntimeOptionsRequest, context: grpc.ServicerContext
    ) -> language_pb2.RuntimeOptionsResponse:
        # Used by `pulumi new` only.  The Go host offers the toolchain and virtualenv choices when Pulumi.yaml has
        # none; this stand-in only knows pip, so it asks nothing.
        return language_pb2.RuntimeOptionsResponse()

    @override
    def About(self, request: language_pb2.AboutRequest, context: grpc.ServicerContext) -> language_pb2.AboutResponse:
        try:
            # Older engines sent no ProgramInfo: then the ambient interpreter is described.
            options = parse_options(request.info) if request.HasField("info") else PythonOptions("", "")
            executable, version = PipToolchain(options).about()
        except LanguageHostError as err:
            _fail(context, err)
        return language_pb2.AboutResponse(executable=executable, version=version)

    @override
    def GetProgramDependencies(
        self, request: language_pb2.GetProgramDependenciesRequest, context: grpc.ServicerContext
    ) -> language_pb2.GetProgramDependenciesResponse:
        try:
            options = parse_options(request.info)
            packages = PipToolchain(options).list_packages(request.transitiveDependencies)
        except LanguageHostError as err:
            _fail(context, LanguageHostError(f"failed to get python dependencies: {err}"))
        return language_pb2.GetProgramDependenciesResponse(
            dependencies=[language_pb2.DependencyInfo(name=p.name, version=p.version) for p in packages]
        )


def _warn_on_old_python(toolchain: PipToolchain) -> None:
    """Like the Go host's validateVersion: problems go to stderr, which the engine shows as a diagnostic."""
    try:
        version = parse_python_version(toolchain.output(["--version"]))
    except LanguageHostError as err:
        print(f"Failed to resolve python version command: {err}", file=sys.stderr, flush=True)
        return
    if not version:
        print("Failed to parse python version", file=sys.stderr, flush=True)
        return
    major, minor = (int(part) for part in version.split(".")[:2])
    if (major, minor) < _MINIMUM_PYTHON:
        print(
            f"Pulumi does not support Python {version}. Please upgrade to at least "
            f"{_MINIMUM_PYTHON[0]}.{_MINIMUM_PYTHON[1]}.0",
            file=sys.stderr,
            flush=True,
        )


def _typecheck(toolchain: PipToolchain, options: PythonOptions) -> None:
    """Run the ``typechecker`` option's checker over the program before running it (as the Go host does)."""
    checker = options.typechecker
    installed = {p.name for p in toolchain.list_packages(transitive=True)}
    if checker not in installed:
        pip = os.path.join(options.virtualenv or "venv", "bin", "pip")
        raise LanguageHostError(
            f"The typechecker option is set to {checker}, but {checker} is not installed. Please add an entry for "
            f"{checker} to requirements.txt and run `{pip} install -r requirements.txt`"
        )
    args = ["-m", checker]
    if checker == "mypy" and toolchain.venv:
        args += ["--exclude", os.path.relpath(toolchain.venv, options.program_dir)]
    args.append(options.program_dir)
    argv, env = toolchain.command(args)
    sys.stdout.flush()
    code = subprocess.run(argv, env=env, cwd=options.program_dir, stdin=subprocess.DEVNULL, check=False).returncode
    if code != 0:
        raise LanguageHostError(f"{checker} failed: {exit_status(code)}")
