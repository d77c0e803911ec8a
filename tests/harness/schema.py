"""Check recorded resource inputs against the providers' Pulumi package schemas.

The schemas live in ../shared/provider-schemas (data beside the checkout, never copied in);
tests that use them skip where that folder is absent, as in a user's clone.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from .project import ROOT

SCHEMA_DIR = ROOT.parent / "shared" / "provider-schemas"  # beside the checkout; absent -> the tests skip
PACKAGES = {"docker": "docker-5.x.json", "command": "command-1.2.1.json", "libvirt": "libvirt-0.5.4.json"}
PLACEHOLDERS = {"[secret]", "[unknown]"}


@cache
def load_schema(package: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / PACKAGES[package]).read_text())


def available() -> bool:
    return all((SCHEMA_DIR / f).exists() for f in PACKAGES.values())


def _resource_schema(type_: str) -> tuple[str, dict[str, Any]] | None:
    if type_.startswith("pulumi:providers:"):
        package = type_.rsplit(":", 1)[-1]
        return (package, load_schema(package)["provider"]) if package in PACKAGES else None
    package = type_.split(":", 1)[0]
    if package not in PACKAGES:
        return None
    schema = load_schema(package)
    if type_ not in schema["resources"]:
        return package, {}
    return package, schema["resources"][type_]


def _check(package: str, spec: dict[str, Any], value: Any, path: str, loose_objects: bool) -> list[str]:
    if isinstance(value, str) and value in PLACEHOLDERS:
        return []
    if "$ref" in spec:
        ref = spec["$ref"]
        if ref.startswith("pulumi.json#/"):
            return []  # Asset, Archive, Any
        token = ref.split("#/types/", 1)[-1]
        type_schema = load_schema(package)["types"].get(token)
        if type_schema is None:
            return [f"{path}: schema has no type {token}"]
        if "enum" in type_schema:
            allowed = [e["value"] for e in type_schema["enum"]]
            return [] if value in allowed else [f"{path}: {value!r} is not one of {allowed}"]
        return _check_object(package, type_schema, value, path, loose_objects)
    if "oneOf" in spec:
        if any(not _check(package, alt, value, path, loose_objects) for alt in spec["oneOf"]):
            return []
        return [f"{path}: {value!r} matches none of the allowed types"]
    kind = spec.get("type")
    if kind == "string":
        return [] if isinstance(value, str) else [f"{path}: expected a string, got {value!r}"]
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected an integer, got {value!r}"]
    if kind == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected a number, got {value!r}"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean, got {value!r}"]
    if kind == "array":
        if loose_objects and isinstance(value, str):
            # provider inputs carry lists JSON-encoded, as they do objects
            try:
                value = json.loads(value)
            except ValueError:
                return [f"{path}: expected a JSON-encoded list, got {value!r}"]
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {value!r}"]
        out = []
        for i, item in enumerate(value):
            out += _check(package, spec.get("items", {}), item, f"{path}[{i}]", loose_objects)
        return out
    if kind == "object":
        if loose_objects and isinstance(value, str):
            return []
        if not isinstance(value, dict):
            return [f"{path}: expected a map, got {value!r}"]
        out = []
        for key, item in value.items():
            out += _check(package, spec.get("additionalProperties", {}), item, f"{path}.{key}", loose_objects)
        return out
    return []


def _check_object(package: str, schema: dict[str, Any], value: Any, path: str, loose_objects: bool) -> list[str]:
    if loose_objects and isinstance(value, str):
        return []  # provider inputs carry nested objects JSON-encoded
    if not isinstance(value, dict):
        return [f"{path}: expected an object, got {value!r}"]
    props = schema.get("properties", {})
    out = [f"{path}.{k}: unknown property" for k in value if k not in props]
    out += [f"{path}.{k}: required property missing" for k in schema.get("required", []) if k not in value]
    for key, item in value.items():
        if key in props:
            out += _check(package, props[key], item, f"{path}.{key}", loose_objects)
    return out


def problems(resource: dict[str, Any]) -> list[str]:
    """Everything in one recorded resource's inputs that the provider schema would reject."""
    found = _resource_schema(resource["type"])
    if found is None:
        return []
    package, schema = found
    name = f"{resource['type']} {resource['name']}"
    if not schema:
        return [f"{name}: the {package} schema has no resource {resource['type']}"]
    loose = resource["type"].startswith("pulumi:providers:")
    # The SDK adds the plugin version to a provider's inputs; it is not a schema property.
    inputs = {k: v for k, v in resource["inputs"].items() if not k.startswith("__") and not (loose and k == "version")}
    shape = {"properties": schema.get("inputProperties", {}), "required": schema.get("requiredInputs", [])}
    return [f"{name}: {p}" for p in _check_object(package, shape, inputs, "", loose)]
