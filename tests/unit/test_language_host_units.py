"""The Python language host stand-in (tools/standins/language-python): the pieces with rules of their own
(flag parsing, options, plugin versions). The real-engine tests run it end to end."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import unittest
from unittest import mock

from tests.harness.project import ROOT

sys.path.insert(0, str(ROOT / "tools" / "standins" / "language-python"))

from google.protobuf import struct_pb2
from pulumi.runtime.proto import language_pb2
from pulumi_langhost import server
from pulumi_langhost.cli import UsageError, parse_args
from pulumi_langhost.packages import InstalledPackage, package_dependency, plugin_version
from pulumi_langhost.toolchain import (
    LanguageHostError,
    activate_virtualenv,
    exit_status,
    parse_options,
    parse_python_version,
)


def program_info(root: str, **options: str) -> language_pb2.ProgramInfo:
    struct = struct_pb2.Struct()
    struct.update(options)
    return language_pb2.ProgramInfo(root_directory=root, program_directory=root, entry_point=".", options=struct)


class ParseArgsTest(unittest.TestCase):
    def test_engine_arguments(self) -> None:
        opts = parse_args(["--use-executor", "/x/exec", "--logtostderr", "-v=9", "--tracing", "t:1", "127.0.0.1:5"])
        self.assertEqual(opts.engine_address, "127.0.0.1:5")
        self.assertEqual(opts.executor, "/x/exec")
        self.assertEqual(opts.tracing, "t:1")
        self.assertEqual(opts.verbose, 9)
        self.assertTrue(opts.log_to_stderr)

    def test_no_engine_address_waits_for_handshake(self) -> None:
        self.assertEqual(parse_args(["-use-executor=/x"]).engine_address, "")

    def test_parsing_stops_at_first_positional(self) -> None:
        self.assertEqual(parse_args(["addr", "-v=3"]).verbose, 0)

    def test_obsolete_flags_are_accepted(self) -> None:
        parse_args(["-virtualenv", "venv", "-root", "/p", "-toolchain=pip", "addr"])

    def test_errors(self) -> None:
        for argv in (["--nope"], ["-v=x"], ["--tracing"], ["--logtostderr=maybe"]):
            with self.subTest(argv=argv), self.assertRaises(UsageError):
                parse_args(argv)


class OptionsTest(unittest.TestCase):
    def test_relative_virtualenv_is_under_the_root(self) -> None:
        opts = parse_options(program_info("/proj", toolchain="pip", virtualenv="venv"))
        self.assertEqual(opts.virtualenv_path, "/proj/venv")
        self.assertEqual(parse_options(program_info("/proj", virtualenv="/abs/env")).virtualenv_path, "/abs/env")

    def test_invalid_options(self) -> None:
        for options in ({"toolchain": "conda"}, {"typechecker": "pytype"}, {"toolchain": "uv"}):
            with self.subTest(options=options), self.assertRaises(LanguageHostError):
                parse_options(program_info("/proj", **options))

    def test_lockfile_selects_an_unsupported_toolchain(self) -> None:
        with tempfile.TemporaryDirectory() as root:
            open(os.path.join(root, "poetry.lock"), "w").close()
            with self.assertRaisesRegex(LanguageHostError, "poetry"):
                parse_options(program_info(root))
            # An explicit toolchain wins over the lock file.
            self.assertEqual(parse_options(program_info(root, toolchain="pip")).toolchain, "pip")

    def test_activate_virtualenv(self) -> None:
        env = activate_virtualenv({"PATH": "/usr/bin", "PYTHONHOME": "/x", "VIRTUAL_ENV": "/old"}, "/p/venv")
        self.assertEqual(env, {"PATH": "/p/venv/bin:/usr/bin", "VIRTUAL_ENV": "/p/venv"})


class VersionsTest(unittest.TestCase):
    def test_plugin_version(self) -> None:
        cases = {
            "1": "1.0.0",
            "1.0": "1.0.0",
            "4.2.1": "4.2.1",
            "1.2.3a4": "1.2.3-alpha.4",
            "1.2.3b4": "1.2.3-beta.4",
            "1.2.3rc4": "1.2.3-rc.4",
            "1.2.3.post4": "1.2.3+post4",
            "1.2.3.dev5": "1.2.3+dev5",
            "1.2.3.post4.dev5": "1.2.3+post4dev5",
        }
        for given, expected in cases.items():
            with self.subTest(given=given):
                self.assertEqual(plugin_version(given), expected)
        for bad in ("1!2.0", "1.0+local", "abc", ""):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                plugin_version(bad)

    def test_python_version(self) -> None:
        self.assertEqual(parse_python_version("Python 3.11.7\n"), "3.11.7")
        self.assertEqual(parse_python_version("Python 3.13.0rc2"), "3.13.0-rc.2")
        self.assertEqual(parse_python_version("nonsense"), "")

    def test_exit_status(self) -> None:
        self.assertEqual(exit_status(3), "exit status 3")
        self.assertEqual(exit_status(-9), "signal: killed")


class PackageDependencyTest(unittest.TestCase):
    def test_from_pulumi_plugin_json(self) -> None:
        dep = package_dependency(
            InstalledPackage("pulumi-command", "1.2.1", {"resource": True, "name": "command", "version": "1.2.1"})
        )
        assert dep is not None
        self.assertEqual((dep.name, dep.version, dep.kind), ("command", "v1.2.1", "resource"))

    def test_derived_from_the_distribution(self) -> None:
        dep = package_dependency(InstalledPackage("pulumi-aws", "6.1.0rc1", None))
        assert dep is not None
        self.assertEqual((dep.name, dep.version), ("aws", "v6.1.0-rc.1"))

    def test_parameterized(self) -> None:
        plugin = {
            "resource": True,
            "name": "terraform-provider",
            "version": "0.8.0",
            "parameterization": {"name": "random", "version": "3.6.0", "value": "eyJ4IjoxfQ=="},
        }
        dep = package_dependency(InstalledPackage("pulumi-random", "3.6.0", plugin))
        assert dep is not None
        self.assertEqual(dep.parameterization.name, "random")
        self.assertEqual(dep.parameterization.value, b'{"x":1}')

    def test_without_plugin(self) -> None:
        self.assertIsNone(package_dependency(InstalledPackage("pulumi-x", "1.0.0", {"resource": False})))
        self.assertIsNone(package_dependency(InstalledPackage("pulumi-x", "1.0.0+local", None)))


class EngineWatchTest(unittest.TestCase):
    def test_stops_when_the_engine_is_gone(self) -> None:
        with socket.socket() as sock:  # a port that nothing listens on once closed
            sock.bind(("127.0.0.1", 0))
            address = f"127.0.0.1:{sock.getsockname()[1]}"
        stop = threading.Event()
        with mock.patch.object(server, "_HEALTH_INTERVAL_SECONDS", 0.05):
            watcher = threading.Thread(target=server._watch_engine, args=(address, stop), daemon=True)
            watcher.start()
            self.assertTrue(stop.wait(10), "the host should stop serving once the engine stops answering")
            watcher.join(10)


if __name__ == "__main__":
    unittest.main()
