"""YAML as the Pulumi CLI and `docker stack config` read it: a repeated key is an error, not a silent overwrite.

PyYAML keeps the last of two equal keys, so a service written with `dns_names` twice would quietly lose a
name. Every user file (stack files, compose files) is read here, and every error names the file, the line and
the column, and says what is wrong.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode


class YamlError(ValueError):
    """`<file>:<line>:<column>: <what is wrong>` (lines and columns counted from 1, as editors do)."""


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<:` merges are YAML's own way of repeating keys on purpose
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:
                continue  # an unhashable key: the base constructor reports it
            if first is not key_node.start_mark:
                raise ConstructorError(
                    None,
                    None,
                    f"key {key!r} repeats the one on line {first.line + 1} (YAML keeps only the last: remove one)",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def load(text: str, file: str) -> Any:
    """The document in `text` (read from `file`); raises YamlError naming where and what."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        if "'\\t'" in what:
            what += " (YAML indents with spaces; a tab is not allowed there)"
        if mark is None:
            raise YamlError(f"{file}: {what}") from None
        raise YamlError(f"{file}:{mark.line + 1}:{mark.column + 1}: {what}") from None
    except yaml.YAMLError as exc:
        raise YamlError(f"{file}: {exc}") from None
