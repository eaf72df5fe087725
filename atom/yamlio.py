"""YAML loading with positions (ruamel.yaml) and `${ENV}` interpolation."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from .errors import Location, Problem

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_yaml(text: str, file: str) -> tuple[Any, list[Problem]]:
    """Parse YAML keeping node positions. Returns (data, problems); data is None on a syntax error."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        return yaml.load(text), []
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        msg = f"invalid YAML: {exc.problem or exc.context}"
        return None, [Problem(loc, msg)]
    except Exception as exc:  # ruamel raises a few non-marked errors (e.g. duplicate keys)
        return None, [Problem(Location(file), f"invalid YAML: {exc}")]


class Where:
    """A node in a YAML file, able to locate its keys and items for error messages."""

    __slots__ = ("col", "file", "line", "node")

    def __init__(self, file: str, node: Any = None, line: int = 0, col: int = 0) -> None:
        self.file = file
        self.node = node
        if node is not None and hasattr(node, "lc") and not line:
            line, col = node.lc.line + 1, node.lc.col + 1
        self.line = line
        self.col = col

    @property
    def location(self) -> Location:
        return Location(self.file, self.line, self.col)

    def key(self, key: Any) -> Location:
        """Location of a mapping key (falls back to the mapping itself)."""
        node = self.node
        if isinstance(node, CommentedMap) and key in node:
            try:
                line, col = node.lc.key(key)
                return Location(self.file, line + 1, col + 1)
            except (KeyError, TypeError):
                pass
        return self.location

    def value(self, key: Any) -> Location:
        node = self.node
        if isinstance(node, CommentedMap) and key in node:
            try:
                line, col = node.lc.value(key)
                return Location(self.file, line + 1, col + 1)
            except (KeyError, TypeError):
                pass
        if isinstance(node, CommentedSeq) and isinstance(key, int):
            try:
                line, col = node.lc.item(key)
                return Location(self.file, line + 1, col + 1)
            except (KeyError, TypeError, IndexError):
                pass
        return self.location

    def child(self, key: Any) -> Where:
        """The Where of a nested node (mapping value or sequence item)."""
        node = self.node
        sub = None
        try:
            sub = node[key] if node is not None else None
        except (KeyError, IndexError, TypeError):
            sub = None
        loc = self.value(key)
        if hasattr(sub, "lc"):
            return Where(self.file, sub)
        return Where(self.file, sub, loc.line, loc.col)


def interpolate(value: str, env: Mapping[str, str] | None = None) -> tuple[str, list[str]]:
    """Replace `${NAME}` / `${NAME:-default}`. Returns (text, names that are unset and have no default)."""
    if "${" not in value:
        return value, []
    env = os.environ if env is None else env
    missing: list[str] = []

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        got = env.get(name)
        if got is None or (got == "" and default is not None):
            if default is None:
                missing.append(name)
                return ""
            return default
        return got

    return _ENV_RE.sub(repl, value), missing


def to_plain(node: Any) -> Any:
    """Deep-convert ruamel containers to plain dicts and lists."""
    if isinstance(node, Mapping):
        return {str(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [to_plain(v) for v in node]
    return node
