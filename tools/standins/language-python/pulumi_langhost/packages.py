"""Which Pulumi resource plugins a program's environment needs (``GetRequiredPackages``).

Like the Go host: every installed distribution that ships a ``<module>/pulumi-plugin.json``, or whose name starts
with ``pulumi-``, is a Pulumi package; ``pulumi-plugin.json`` may opt out (``"resource": false``) or give the plugin's
name, version, download server and parameterization; otherwise the name is the distribution name without
``pulumi-`` and the version is the distribution's PEP 440 version spelled as semver.

One difference: the Go host runs ``pip list`` and then locates each package; here a single small script run by the
project's interpreter lists the distributions and reads their ``pulumi-plugin.json`` with ``importlib.metadata``.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

from pulumi.runtime.proto import plugin_pb2

from pulumi_langhost.toolchain import LanguageHostError, PipToolchain

# Packages known to have no plugin even though their names say "pulumi-" (from the Go host).
_WITHOUT_PLUGINS = frozenset({"pulumi-policy", "pulumi-esc-sdk"})

# Runs in the project's interpreter; prints [{"name", "version", "plugin"}] where "plugin" is the parsed
# pulumi-plugin.json of the distribution's module (named after the distribution, "-" -> "_"), or null.
_LIST_SCRIPT = r"""
import importlib.metadata, json, os, re, sys
seen = {}
for dist in importlib.metadata.distributions():
    raw = dist.metadata["Name"]
    if not raw:
        continue
    name = re.sub(r"[-_.]+", "-", raw).lower()
    if name in seen:
        continue
    path = os.path.join(str(dist.locate_file("")), name.replace("-", "_"), "pulumi-plugin.json")
    plugin = None
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            plugin = json.load(f)
    seen[name] = {"name": name, "version": dist.version, "plugin": plugin}
json.dump(list(seen.values()), sys.stdout)
"""


@dataclass(frozen=True)
class InstalledPackage:
    name: str
    version: str
    plugin: dict[str, Any] | None


def installed_packages(toolchain: PipToolchain) -> list[InstalledPackage]:
    try:
        raw = json.loads(toolchain.output(["-c", _LIST_SCRIPT]))
    except json.JSONDecodeError as err:
        raise LanguageHostError(f"reading the installed Python packages: {err}") from err
    return [InstalledPackage(str(p["name"]), str(p["version"]), p["plugin"]) for p in raw]


def required_packages(toolchain: PipToolchain) -> list[plugin_pb2.PackageDependency]:
    result: list[plugin_pb2.PackageDependency] = []
    for package in installed_packages(toolchain):
        if package.plugin is None and not package.name.startswith("pulumi-"):
            continue
        if package.name in _WITHOUT_PLUGINS:
            continue
        dependency = package_dependency(package)
        if dependency is not None:
            result.append(dependency)
    return result


def package_dependency(package: InstalledPackage) -> plugin_pb2.PackageDependency | None:
    """The plugin a Pulumi package needs, or None (no plugin, or a version that cannot be spelled as semver)."""
    plugin = package.plugin or {}
    if package.plugin is not None and not plugin.get("resource", False):
        return None
    name = str(plugin.get("name") or package.name.removeprefix("pulumi-"))
    version = str(plugin.get("version") or "")
    if not version:
        try:
            version = plugin_version(package.version)
        except ValueError:
            return None  # e.g. an alpha build whose plugin version has a +build suffix we cannot know
    if not version.startswith("v"):
        version = "v" + version

    parameterization = None
    if isinstance(raw := plugin.get("parameterization"), dict):
        parameterization = plugin_pb2.PackageParameterization(
            name=str(raw.get("name", "")),
            version=str(raw.get("version", "")),
            # Go encodes []byte in JSON as base64.
            value=base64.b64decode(raw.get("value") or ""),
        )
    return plugin_pb2.PackageDependency(
        name=name,
        version=version,
        kind="resource",
        server=str(plugin.get("server") or ""),
        parameterization=parameterization,
    )


_PEP440 = re.compile(
    r"^(?P<release>\d+(?:\.\d+)*)"
    r"(?:(?P<pre>a|b|rc)(?P<pre_n>\d*))?"
    r"(?:\.post(?P<post>\d*))?"
    r"(?:\.dev(?P<dev>\d*))?$"
)
_PRE_LABELS = {"a": "alpha", "b": "beta", "rc": "rc"}


def plugin_version(package_version: str) -> str:
    """Spell a PEP 440 version ``N(.N)*[{a|b|rc}N][.postN][.devN]`` as semver, like the Go host.

    ``1.0`` -> ``1.0.0``, ``1.2.3a4`` -> ``1.2.3-alpha.4``, ``1.2.3rc4`` -> ``1.2.3-rc.4``,
    ``1.2.3.post4`` -> ``1.2.3+post4``, ``1.2.3.post4.dev5`` -> ``1.2.3+post4dev5``.  Raises ValueError otherwise
    (epochs, local versions, anything else).
    """
    match = _PEP440.match(package_version)
    if not match:
        raise ValueError(f"cannot convert Python package version {package_version!r} to a plugin version")
    segments = match["release"].split(".")
    segments += ["0"] * (3 - len(segments))
    result = ".".join(segments)
    if match["pre"]:
        result += f"-{_PRE_LABELS[match['pre']]}.{match['pre_n']}"
    if match["post"] is not None:
        result += f"+post{match['post']}"
    if match["dev"] is not None:
        result += ("" if match["post"] is not None else "+") + f"dev{match['dev']}"
    return result
