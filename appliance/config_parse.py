"""Reading a configuration document: JSON (a `.json` file or a document starting with `{`) with a
JSON parser, anything else with a safe YAML loader; both under the same limits (size, nesting,
values once aliases are expanded), with line and column in every error."""

from __future__ import annotations

import json
import re
from collections.abc import Hashable
from typing import Any, NoReturn

import yaml

from appliance.errors import ConfigError
from appliance.validation import show

MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""A configuration file larger than this is refused before it is parsed."""
MAX_YAML_DEPTH = 100
"""Nesting limit of the document, counting what aliases expand to."""
MAX_YAML_VALUES = 100_000
"""Limit on the values of the document with every alias expanded (a YAML "billion laughs" bomb
expands a few hundred bytes into billions of values; every later pass copies the expansion)."""


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans (`no`, `on`, `yes` stay strings: `no` is Norwegian), no duplicate keys, and
    bounded documents: at most `MAX_YAML_DEPTH` levels and `MAX_YAML_VALUES` values with every alias
    expanded, no recursive aliases. Both are checked on the composed nodes, before anything is
    constructed or copied, so a hostile file is refused in milliseconds."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self.current: yaml.Node | None = None
        """The node being constructed, to locate a value that cannot be read."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # PyYAML composes recursively: stop before Python's recursion limit does (~490 levels).
        if self._depth >= MAX_YAML_DEPTH:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", event.start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            _check_expansion(node)
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        self.current = node
        return super().construct_object(node, deep)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {show(key)}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


_Loader.yaml_implicit_resolvers = {
    ch: [r for r in rs if r[0] != "tag:yaml.org,2002:bool"]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph that is recursive, or too deep or too large once aliases are expanded.

    An alias is the anchored node itself (PyYAML shares it), so each node's expanded size and
    height are computed once: linear in the size of the text whatever the aliases expand to.
    """
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded values, height)
    open_nodes: set[int] = set()

    def refuse(node: yaml.Node, problem: str) -> NoReturn:
        raise yaml.composer.ComposerError(None, None, problem, node.start_mark)

    def walk(node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in done:
            size, height = done[key]
        else:
            if key in open_nodes:
                refuse(node, "an alias refers to a node that contains it (a recursive structure)")
            if depth > MAX_YAML_DEPTH:
                refuse(node, f"nested more than {MAX_YAML_DEPTH} levels deep once aliases are expanded")
            open_nodes.add(key)
            if isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            else:
                children = []
            size, height = 1, 1
            for child in children:
                child_size, child_height = walk(child, depth + 1)
                size += child_size
                height = max(height, child_height + 1)
                if size > MAX_YAML_VALUES:
                    refuse(
                        node,
                        f"more than {MAX_YAML_VALUES:,} values once aliases are expanded (a YAML alias "
                        "bomb?); a configuration needs far fewer",
                    )
            open_nodes.discard(key)
            done[key] = (size, height)
        if depth + height - 1 > MAX_YAML_DEPTH:
            refuse(node, f"nested more than {MAX_YAML_DEPTH} levels deep once aliases are expanded")
        return size, height

    walk(root, 1)


_VALUE_KINDS = {
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:timestamp": "a date",
    "tag:yaml.org,2002:binary": "base64 data",
}


def parse_yaml(text: str) -> object:
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # the reader checks the characters here
        return loader.get_single_data()
    except yaml.MarkedYAMLError as err:
        # Never str(err): its snippet of the line could show a secret.
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        raise ConfigError([f"{where}: {err.problem or err.context or 'invalid YAML'}"]) from None
    except yaml.reader.ReaderError as err:
        what = f"character #x{err.character:04x}" if isinstance(err.character, int) else "byte"
        raise ConfigError([f"offset {err.position}: unacceptable {what} ({err.reason})"]) from None
    except yaml.YAMLError as err:
        raise ConfigError([f"invalid YAML ({type(err).__name__})"]) from None
    except (ValueError, OverflowError, TypeError) as err:  # a scalar the constructors cannot convert
        node = loader.current if loader is not None else None
        mark = node.start_mark if node is not None else None
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        kind = _VALUE_KINDS.get(node.tag, "a value") if node is not None else "a value"
        reason = str(err).split(":")[0][:80]
        raise ConfigError([f"{where}: cannot be read as {kind} ({reason})"]) from None
    finally:
        if loader is not None:
            loader.dispose()


_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _json_position(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    return f"line {line}, column {offset - (text.rfind(chr(10), 0, offset) + 1) + 1}"


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _JsonDuplicate(key)
        out[key] = value
    return out


class _JsonDuplicate(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _json_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str) -> object:
    """A JSON document (a platform export) with the YAML loader's bounds: at most `MAX_YAML_DEPTH`
    levels (checked before parsing, so no recursion error) and `MAX_YAML_VALUES` values; no
    duplicate keys, no NaN/Infinity."""
    depth = 0
    for token in _JSON_TOKENS.finditer(text):
        ch = token.group()
        if ch in "[{":
            depth += 1
            if depth > MAX_YAML_DEPTH:
                where = _json_position(text, token.start())
                raise ConfigError([f"{where}: nested more than {MAX_YAML_DEPTH} levels deep"])
        elif ch in "]}":
            depth -= 1
    try:
        data = json.loads(text, object_pairs_hook=_json_pairs, parse_constant=_json_constant)
    except json.JSONDecodeError as err:  # never the line itself: it could show a secret
        raise ConfigError([f"line {err.lineno}, column {err.colno}: {err.msg} (invalid JSON)"]) from None
    except _JsonDuplicate as err:
        raise ConfigError([f"JSON: duplicate key {show(err.key)}"]) from None
    except (ValueError, RecursionError) as err:
        raise ConfigError([f"invalid JSON ({str(err)[:80]})"]) from None
    count = 0
    stack: list[object] = [data]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise ConfigError([f"more than {MAX_YAML_VALUES:,} values; a configuration needs far fewer"])
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return data


def is_json(text: str, source: str) -> bool:
    """A `.json` file, or any document whose first character (after whitespace) is `{`."""
    return source.lower().endswith(".json") or text.lstrip().startswith("{")


def lone_surrogates(node: object, path: str, problems: list[str]) -> None:
    """A string with half of a UTF-16 pair (`\\ud83d` alone) cannot be spoken or logged."""
    if isinstance(node, str):
        if any("\ud800" <= ch <= "\udfff" for ch in node):
            problems.append(
                f"{path or 'top level'}: a lone UTF-16 surrogate escape (half of an emoji's "
                "\\uXXXX\\uXXXX pair); write the character or its complete pair"
            )
    elif isinstance(node, dict):
        for key, value in node.items():
            name = str(key).encode("utf-8", "backslashreplace").decode("utf-8")
            sub = f"{path}.{name}" if path else name
            lone_surrogates(key, sub, problems)
            lone_surrogates(value, sub, problems)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            lone_surrogates(value, f"{path}[{i}]", problems)
