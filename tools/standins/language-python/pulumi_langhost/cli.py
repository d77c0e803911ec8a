"""Command-line parsing with the conventions of Go's ``flag`` package.

The engine starts a language plugin as ``pulumi-language-python [--logtostderr] [-v=N] [--tracing URL] ENGINE``
(see ``buildPluginArguments`` in the Pulumi SDK): Go-style flags, with one or two dashes, ``-name=value`` or
``-name value``, parsing stopping at the first non-flag argument.  ``argparse`` handles ``-v=9`` differently, so the
few flags the Go host defines are parsed here by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class UsageError(Exception):
    """A command line the Go host would also reject (it exits with status 2)."""


# Flags that take a value.  ``virtualenv``, ``root``, ``typechecker`` and ``toolchain`` are obsolete in the Go host
# (the options now come from ``ProgramInfo`` on each request) but still accepted, so they are accepted and ignored.
_VALUE_FLAGS = frozenset({"tracing", "use-executor", "v", "virtualenv", "root", "typechecker", "toolchain"})
# Boolean glog flags that the engine may forward when ``--logflow`` is in effect.
_BOOL_FLAGS = frozenset({"logtostderr", "logflow", "alsologtostderr"})
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})


@dataclass(frozen=True)
class LaunchOptions:
    """What the host needs from its command line."""

    engine_address: str = ""
    tracing: str = ""
    executor: str = ""
    verbose: int = 0
    log_to_stderr: bool = False


def parse_args(argv: Sequence[str]) -> LaunchOptions:
    """Parse the plugin's arguments; the first positional argument, if any, is the engine's gRPC address."""
    values: dict[str, str] = {}
    bools: dict[str, bool] = {}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            positional = list(argv[i + 1 :])
            break
        if not arg.startswith("-") or arg == "-":
            positional = list(argv[i:])
            break
        body = arg[2:] if arg.startswith("--") else arg[1:]
        name, has_value, value = body.partition("=")
        if not name or name.startswith("-"):
            raise UsageError(f"bad flag syntax: {arg}")
        if name in _BOOL_FLAGS:
            if has_value and value not in _TRUE | _FALSE:
                raise UsageError(f"invalid boolean value {value!r} for -{name}")
            bools[name] = not has_value or value in _TRUE
        elif name in _VALUE_FLAGS:
            if not has_value:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: -{name}")
                value = argv[i]
            values[name] = value
        else:
            raise UsageError(f"flag provided but not defined: -{name}")
        i += 1

    verbose_text = values.get("v", "0")
    try:
        verbose = int(verbose_text)
    except ValueError:
        raise UsageError(f"invalid value {verbose_text!r} for flag -v") from None

    return LaunchOptions(
        engine_address=positional[0] if positional else "",
        tracing=values.get("tracing", ""),
        executor=values.get("use-executor", ""),
        verbose=verbose,
        log_to_stderr=bools.get("logtostderr", False) or bools.get("alsologtostderr", False),
    )
