"""The ``pip`` Python toolchain: which interpreter runs the program, and how its virtual environment is managed.

This follows ``sdk/python/toolchain`` (``pip.go``, ``toolchain.go``) of the Pulumi SDK: the ``virtualenv`` runtime
option is resolved against the project root, the interpreter is ``<venv>/bin/python`` run with the environment
"activated", and without a virtualenv the interpreter is ``$PULUMI_PYTHON_CMD`` or else ``python3``/``python`` from
``PATH``.  Only ``pip`` is implemented; ``poetry`` and ``uv`` projects get a clear error.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from pulumi.runtime.proto import language_pb2

from pulumi_langhost.streams import OutputSink, info, run_streaming


class LanguageHostError(Exception):
    """An error reported to the engine as the failure of an RPC (its message is shown to the user)."""


_TYPECHECKERS = frozenset({"mypy", "pyright"})
_TOOLCHAINS = frozenset({"pip", "poetry", "uv"})
# The toolchain the Go host picks when Pulumi.yaml names none: the first lock file found upwards wins.
_LOCKFILES = (("uv.lock", "uv"), ("poetry.lock", "poetry"))


@dataclass(frozen=True)
class PythonOptions:
    """The Python ``runtime.options`` of a project, with the directories they are relative to."""

    root: str
    program_dir: str
    virtualenv: str = ""
    typechecker: str = ""
    toolchain: str = "pip"

    @property
    def virtualenv_path(self) -> str:
        """The virtual environment's absolute path ('' for none): relative paths are relative to the project root."""
        if not self.virtualenv:
            return ""
        return os.path.join(self.root, self.virtualenv) if not os.path.isabs(self.virtualenv) else self.virtualenv


def parse_options(info: language_pb2.ProgramInfo | None) -> PythonOptions:
    """Read and validate the runtime options of a ``ProgramInfo`` (same checks and messages as the Go host)."""
    if info is None:
        return PythonOptions(root="", program_dir="")
    raw: dict[str, Any] = json_format.MessageToDict(info.options) if info.HasField("options") else {}

    def string_option(key: str) -> str:
        value = raw.get(key, "")
        if not isinstance(value, str):
            raise LanguageHostError(f"{key} option must be a string")
        return value

    virtualenv = string_option("virtualenv")
    typechecker = string_option("typechecker")
    if typechecker and typechecker not in _TYPECHECKERS:
        raise LanguageHostError(f"unsupported typechecker option: {typechecker}")
    toolchain = string_option("toolchain")
    if toolchain and toolchain not in _TOOLCHAINS:
        raise LanguageHostError(f"unsupported toolchain option: {toolchain}")
    if not toolchain:
        toolchain = _detect_toolchain(info.program_directory)
    if toolchain != "pip":
        raise LanguageHostError(
            f"the {toolchain!r} Python toolchain is not supported by this pulumi-language-python stand-in; "
            "use `toolchain: pip` in Pulumi.yaml"
        )
    return PythonOptions(
        root=info.root_directory,
        program_dir=info.program_directory,
        virtualenv=virtualenv,
        typechecker=typechecker,
        toolchain=toolchain,
    )


def _detect_toolchain(program_dir: str) -> str:
    if not program_dir:
        return "pip"
    for lockfile, toolchain in _LOCKFILES:
        directory = os.path.abspath(program_dir)
        while True:
            if os.path.exists(os.path.join(directory, lockfile)):
                return toolchain
            parent = os.path.dirname(directory)
            if parent == directory:
                break
            directory = parent
    return "pip"


def find_base_python() -> str:
    """The interpreter used without a virtualenv (and to create one): ``$PULUMI_PYTHON_CMD``, else python3/python."""
    override = os.environ.get("PULUMI_PYTHON_CMD", "")
    candidates = [override] if override else ["python3", "python"]
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    quoted = " ".join(f'"{c}"' for c in candidates)
    raise LanguageHostError(
        f"failed to locate any of [{quoted}] on your PATH. Have you installed Python 3.6 or greater?"
    )


def activate_virtualenv(environ: Mapping[str, str], venv: str) -> dict[str, str]:
    """What ``source venv/bin/activate`` does: venv/bin first on PATH, VIRTUAL_ENV set, PYTHONHOME unset."""
    env = {k: v for k, v in environ.items() if k.upper() not in ("PYTHONHOME", "VIRTUAL_ENV")}
    bin_dir = os.path.join(venv, "bin")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}" if env.get("PATH") else bin_dir
    env["VIRTUAL_ENV"] = venv
    return env


def is_virtualenv(directory: str) -> bool:
    """True if ``directory`` has a ``bin/python`` (the Go toolchain's test)."""
    return os.path.isfile(os.path.join(directory, "bin", "python"))


def virtualenv_error(option: str, path: str) -> LanguageHostError:
    """The Go toolchain's ``NewVirtualEnvError``, telling the user how to create the environment."""
    problem = "doesn't exist" if not os.path.exists(path) else "doesn't appear to be a virtual environment"
    venv_python = os.path.join(path, "bin", "python")
    commands = (
        f"    1. python3 -m venv {path}\n"
        f"    2. {venv_python} -m pip install --upgrade pip setuptools wheel\n"
        f"    3. {venv_python} -m pip install -r requirements.txt\n"
    )
    return LanguageHostError(
        f"The 'virtualenv' option in Pulumi.yaml is set to {option!r}, but {path!r} {problem}; "
        f"run the following commands to create the virtual environment and install dependencies into it:\n\n"
        f"{commands}\n\n"
        "For more information see: https://www.pulumi.com/docs/intro/languages/python/#virtual-environments"
    )


def exit_status(code: int) -> str:
    """Go's wording for a failed command (``exec.ExitError.Error()``); negative codes are signals."""
    if code >= 0:
        return f"exit status {code}"
    name = signal.strsignal(-code) or str(-code)
    return f"signal: {name.lower()}"


@dataclass(frozen=True)
class Dependency:
    name: str
    version: str


def normalize_package_name(name: str) -> str:
    """PEP 503 normalisation, as the SDK's toolchain applies to ``pip list`` names."""
    return re.sub(r"[-_.]+", "-", name).lower()


class PipToolchain:
    """Runs Python for a project that uses ``pip`` with an optional virtual environment."""

    def __init__(self, options: PythonOptions) -> None:
        self.options = options
        self.venv = options.virtualenv_path

    def interpreter(self) -> tuple[str, dict[str, str]]:
        """The Python executable and the environment to run it with."""
        if not self.venv:
            return find_base_python(), dict(os.environ)
        return os.path.join(self.venv, "bin", "python"), activate_virtualenv(os.environ, self.venv)

    def command(self, args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        python, env = self.interpreter()
        return [python, *args], env

    def output(self, args: Sequence[str]) -> str:
        """Run ``python ARGS`` and return its stdout; a failure raises with Go's ``exit status N`` wording."""
        argv, env = self.command(args)
        try:
            proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        except OSError as err:
            raise LanguageHostError(f"calling `{' '.join(argv)}`: {err}") from err
        if proc.returncode != 0:
            raise LanguageHostError(f"calling `{' '.join(argv)}`: {exit_status(proc.returncode)}")
        return proc.stdout.decode(errors="replace")

    def validate_venv(self) -> None:
        if self.options.virtualenv and not is_virtualenv(self.venv):
            raise virtualenv_error(self.options.virtualenv, self.venv)

    def ensure_venv(self, cwd: str, sink: OutputSink) -> None:
        """Create the virtual environment and install the requirements if it is missing or empty."""
        if not self.options.virtualenv or is_virtualenv(self.venv):
            return
        if os.path.exists(self.venv):
            if not os.path.isdir(self.venv):
                raise LanguageHostError(
                    f"the 'virtualenv' option in Pulumi.yaml is set to {self.venv!r} but it is not a directory"
                )
            if os.listdir(self.venv):
                return  # not empty: left for validate_venv to report
        self.install_dependencies(cwd, sink)

    def install_dependencies(self, cwd: str, sink: OutputSink) -> None:
        """(Re)create the virtual environment, update pip/setuptools/wheel, ``pip install -r requirements.txt``.

        Like the Go toolchain this always runs ``python -m venv`` (a no-op on an existing environment) and the pip
        updates; without a virtualenv option it installs into the ambient interpreter.
        """
        if self.venv:
            info(sink, "Creating virtual environment...")
            if not os.path.isabs(self.venv):
                raise LanguageHostError(f"virtual environment path must be absolute: {self.venv}")
            base = find_base_python()
            proc = subprocess.run(
                [base, "-m", "venv", self.venv], stdin=subprocess.DEVNULL, capture_output=True, check=False
            )
            if proc.returncode != 0:
                if proc.stdout or proc.stderr:
                    sink.write_err(proc.stdout + proc.stderr + b"\n")
                raise LanguageHostError(
                    f"creating virtual environment at '{self.venv}': {exit_status(proc.returncode)}"
                )
            info(sink, "Finished creating virtual environment")

        info(sink, "Updating pip, setuptools, and wheel in virtual environment...")
        self._pip_install(cwd, sink, "updating pip, setuptools, and wheel", ["--upgrade", "pip", "setuptools", "wheel"])
        info(sink, "Finished updating")

        if not os.path.exists(os.path.join(cwd, "requirements.txt")):
            return
        info(sink, "Installing dependencies in virtual environment...")
        self._pip_install(cwd, sink, "installing dependencies", ["-r", "requirements.txt"])
        info(sink, "Finished installing dependencies")

    def _pip_install(self, cwd: str, sink: OutputSink, what: str, args: Sequence[str]) -> None:
        argv, env = self.command(["-m", "pip", "install", *args])
        try:
            code, stderr = run_streaming(argv, env, cwd, sink)
        except OSError as err:
            raise LanguageHostError(f"{what} via '{' '.join(argv)}': {err}") from err
        if code != 0:
            detail = f": {stderr}" if stderr else ""
            raise LanguageHostError(f"{what} via '{' '.join(argv)}': {exit_status(code)}{detail}")

    def list_packages(self, transitive: bool) -> list[Dependency]:
        """``pip list`` of the environment (top-level packages only unless ``transitive``)."""
        args = ["-m", "pip", "list", "--format", "json"]
        if not transitive:
            args.append("--not-required")
        raw = json.loads(self.output(args))
        return [Dependency(normalize_package_name(str(p["name"])), str(p["version"])) for p in raw]

    def about(self) -> tuple[str, str]:
        """(executable, version) of the interpreter; an unparsable version is left empty, as in the Go host."""
        executable = self.output(["-c", "import sys; print(sys.executable)"]).strip()
        try:
            version = parse_python_version(self.output(["--version"]))
        except LanguageHostError:
            version = ""
        return executable, version


def parse_python_version(text: str) -> str:
    """``Python 3.11.7`` -> ``3.11.7`` (pre-releases in semver spelling), '' if unparsable."""
    match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?(?:(a|b|rc|dev)(\d+))?", text.strip().removeprefix("Python "))
    if not match:
        return ""
    major, minor, patch, pre, pre_number = match.groups()
    version = f"{major}.{minor}.{patch or 0}"
    if pre:
        label = {"a": "alpha", "b": "beta"}.get(pre, pre)
        version += f"-{label}.{pre_number}"
    return version
