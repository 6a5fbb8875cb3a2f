"""A strict YAML loader with YAML 1.2 core-schema scalars, duplicate-key errors and line numbers.

PyYAML resolves YAML 1.1 scalars: ``NO`` (Norway) becomes ``False``, ``0755``
becomes 493 and ``12:30`` becomes 750. Config and policy files are read here
instead: only ``true``/``false`` are booleans, ints and floats follow the 1.2
core schema, everything else stays a string. Duplicate keys, non-string keys,
oversized files and alias bombs are errors. The result comes with a map from
dotted path to line number so validation errors can point at the line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 100_000

_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT10 = re.compile(r"^[-+]?[0-9]+$")
_INT8 = re.compile(r"^0o[0-7]+$")
_INT16 = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")


class YamlLoadError(Exception):
    """The text is not acceptable YAML; `line` points at the problem where known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True, slots=True)
class LoadedYaml:
    """Plain Python data plus the line of every dotted path."""

    data: Any
    lines: dict[str, int]

    def line_of(self, path: str) -> int | None:
        """The line of `path`, or of its nearest ancestor."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""


class _Composer(yaml.SafeLoader):
    """SafeLoader used only to compose nodes; we construct values ourselves."""


_ALLOWED_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map")
)


def _scalar(node: ScalarNode) -> Any:
    value: str = node.value
    if node.tag not in _ALLOWED_TAGS:
        raise YamlLoadError(f"unsupported tag {node.tag}", node.start_mark.line + 1)
    if node.style is not None:  # quoted or block scalars are always strings
        return value
    if _NULL.match(value):
        return None
    if _BOOL.match(value):
        return value.lower() == "true"
    if _INT10.match(value):
        return int(value, 10)
    if _INT8.match(value):
        return int(value[2:], 8)
    if _INT16.match(value):
        return int(value[2:], 16)
    if _FLOAT.match(value):
        return float(value)
    if _INF.match(value):
        return -math.inf if value.startswith("-") else math.inf
    if _NAN.match(value):
        return math.nan
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _build(node: Node, path: str, lines: dict[str, int], budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise YamlLoadError("document too large (alias bomb?)", node.start_mark.line + 1)
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, ScalarNode):
        return _scalar(node)
    if node.tag not in _ALLOWED_TAGS:
        raise YamlLoadError(f"unsupported tag {node.tag}", node.start_mark.line + 1)
    if isinstance(node, SequenceNode):
        return [_build(item, f"{path}[{i}]", lines, budget) for i, item in enumerate(node.value)]
    if isinstance(node, MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlLoadError(
                    "merge keys (<<) are not supported", key_node.start_mark.line + 1
                )
            key = _build(key_node, path, {}, budget)
            if not isinstance(key, str):
                raise YamlLoadError(
                    f"{path or '<root>'}: key {key!r} must be a string (quote it)",
                    key_node.start_mark.line + 1,
                )
            if key in result:
                raise YamlLoadError(
                    f"{_join(path, key)}: duplicate key {key!r}", key_node.start_mark.line + 1
                )
            child = _join(path, key)
            lines[child] = key_node.start_mark.line + 1
            result[key] = _build(value_node, child, lines, budget)
        return result
    raise YamlLoadError("unsupported YAML node", node.start_mark.line + 1)  # pragma: no cover


def loads(text: str) -> LoadedYaml:
    """Parse one YAML document from text."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise YamlLoadError(f"file is larger than {MAX_FILE_BYTES} bytes")
    try:
        node = yaml.compose(text, Loader=_Composer)  # compose only, never constructs
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise YamlLoadError(f"YAML syntax error: {exc.problem or exc}", line) from None
    except yaml.YAMLError as exc:
        raise YamlLoadError(f"YAML error: {exc}") from None
    if node is None:
        raise YamlLoadError("file is empty")
    lines: dict[str, int] = {}
    data = _build(node, "", lines, [MAX_NODES])
    return LoadedYaml(data, lines)


def load_file(path: Path) -> LoadedYaml:
    """Read and parse a YAML file; size, encoding and syntax problems raise `YamlLoadError`."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise YamlLoadError("file not found") from None
    except OSError as exc:
        raise YamlLoadError(f"cannot read file: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise YamlLoadError(f"file is larger than {MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlLoadError(f"file is not UTF-8 (byte {exc.start})") from None
    return loads(text)
