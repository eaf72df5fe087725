"""YAML loading with positions (ruamel.yaml) and `${ENV}` interpolation.

A component file is parsed by ruamel.yaml, with its C parser (libyaml, shipped by `ruamel.yaml.clib`)
when it is installed, and its events are turned here into plain dicts and lists (`YamlMap`,
`YamlList`) that remember the line and column of every key, value and item, so that every problem
can be reported as `file:line:col`. Scalars are resolved by ruamel.yaml's YAML 1.2 rules (1.1 under a
`%YAML 1.1` directive). The pure-Python parser is used when the C extension is missing
and for any file the C parser refuses: libyaml rejects a few YAML 1.2 forms that ruamel.yaml accepts
(a `:` inside a plain scalar of a flow mapping, as in `{source: o:Order/o:Id}`), and ruamel.yaml
words syntax errors more clearly.

Hardening: a duplicate key is an error; so is an alias to a node that contains it, nesting deeper
than `MAX_DEPTH`, and anchors and aliases that would expand a document beyond `MAX_EXPANDED_NODES`
nodes (a "billion laughs" file is rejected at once instead of exhausting the checks that walk the
data). Building is iterative, and an anchored node is built once and shared by its aliases.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Generator, Iterable, Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import implicit_resolvers

from .errors import Location, Problem

try:  # the C parser of ruamel.yaml (libyaml)
    from ruamel.yaml.cyaml import CParser as _CParser
except ImportError:  # pragma: no cover - depends on the installation
    _CParser = None

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

#: anchors and aliases may not make a document larger than this once expanded (nodes)
MAX_EXPANDED_NODES = 100_000
#: mappings and lists may not nest deeper than this
MAX_DEPTH = 100

_T = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = _T + "str", _T + "int", _T + "float", _T + "bool", _T + "null"
TIMESTAMP, MERGE, MAP, SEQ = _T + "timestamp", _T + "merge", _T + "map", _T + "seq"


def _resolvers(version: tuple[int, int]) -> dict[str, list[tuple[str, Any]]]:
    """First character -> [(tag, regexp)]: ruamel.yaml's implicit resolvers of a YAML version, in its order."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for versions, tag, rx, firsts in implicit_resolvers:
        if version in versions and tag in (BOOL, FLOAT, INT, NULL, TIMESTAMP, MERGE):
            for c in firsts:
                out.setdefault(c, []).append((tag, rx))
    return out


_RESOLVERS = _resolvers((1, 2))
_RESOLVERS_11 = _resolvers((1, 1))


# ------------------------------------------------------------------------------------------- data


class YamlMap(dict):  # type: ignore[type-arg]
    """A mapping read from YAML: a dict that knows where it, its keys and its values are (1-based)."""

    __slots__ = ("col", "line", "pos")

    def __init__(self, line: int = 0, col: int = 0) -> None:
        super().__init__()
        self.line = line
        self.col = col
        #: key -> (key line, key col, value line, value col)
        self.pos: dict[Any, tuple[int, int, int, int]] = {}


class YamlList(list):  # type: ignore[type-arg]
    """A sequence read from YAML: a list that knows where it and each item are (1-based)."""

    __slots__ = ("col", "line", "pos")

    def __init__(self, line: int = 0, col: int = 0) -> None:
        super().__init__()
        self.line = line
        self.col = col
        #: (line, col) of each item
        self.pos: list[tuple[int, int]] = []


class _Invalid(Exception):
    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


_MERGE_KEY: Any = object()  # a plain `<<` key
_NO_KEY: Any = object()  # a key already reported as wrong: its value is skipped


class _Frame:
    __slots__ = ("anchor", "container", "key", "key_mark", "mark", "merges", "size")

    def __init__(self, container: YamlMap | YamlList, anchor: str | None, mark: Any) -> None:
        self.container = container
        self.anchor = anchor
        self.mark = mark
        self.key: Any = _NO_KEY
        self.key_mark: Any = None
        self.merges: list[tuple[Any, Any, int]] = []
        self.size = 1


class _Builder:
    """Builds YamlMap / YamlList / scalars from the parser's events, without recursion.

    An anchored node is built once and shared by its aliases, so the data stays as small as the
    file; the size it would have once expanded is counted to refuse alias bombs."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.open_anchors: set[str] = set()
        self.events = 0
        self.problems: list[Problem] = []
        self.resolvers = _RESOLVERS

    def loc(self, mark: Any) -> Location:
        return Location(self.file, mark.line + 1, mark.column + 1)

    def error(self, mark: Any, message: str) -> None:
        self.problems.append(Problem(self.loc(mark), f"invalid YAML: {message}"))

    def run(self, events: Iterable[Any]) -> Any:
        """The document's data (None for an empty stream)."""
        stack: list[_Frame] = []
        root: Any = None
        documents = 0
        for e in events:
            self.events += 1
            cls = type(e)
            if cls is ScalarEvent:
                mark = e.start_mark
                value = self.scalar(e)
                if e.anchor is not None:
                    self.anchors[e.anchor] = (value, 1)
                size = 1
            elif cls is AliasEvent:
                mark = e.start_mark
                got = self.anchors.get(e.anchor)
                if got is None:
                    if e.anchor in self.open_anchors:
                        raise _Invalid(e.start_mark, f"alias '*{e.anchor}' refers to a node that contains it")
                    raise _Invalid(e.start_mark, f"found undefined alias '*{e.anchor}'")
                value, size = got
            elif cls is MappingStartEvent or cls is SequenceStartEvent:
                tag = None if e.ctag is None else str(e.ctag)
                m = e.start_mark
                if cls is MappingStartEvent:
                    if tag is not None and tag != MAP and tag != "!":
                        raise _Invalid(m, f"unsupported tag '{tag}' on a mapping")
                    container: YamlMap | YamlList = YamlMap(m.line + 1, m.column + 1)
                else:
                    if tag is not None and tag != SEQ and tag != "!":
                        raise _Invalid(m, f"unsupported tag '{tag}' on a sequence")
                    container = YamlList(m.line + 1, m.column + 1)
                if e.anchor is not None:
                    self.open_anchors.add(e.anchor)
                    self.anchors.pop(e.anchor, None)
                stack.append(_Frame(container, e.anchor, m))
                if len(stack) > MAX_DEPTH:
                    raise _Invalid(m, f"mappings and lists nested more than {MAX_DEPTH} levels deep")
                continue
            elif cls is MappingEndEvent or cls is SequenceEndEvent:
                frame = stack.pop()
                value, mark = frame.container, frame.mark
                if frame.merges:
                    self.merge(frame)
                size = frame.size
                if size > MAX_EXPANDED_NODES and size > 10 * self.events:
                    raise _Invalid(e.start_mark, "anchors and aliases expand this document to more than "
                                                 f"{MAX_EXPANDED_NODES:,} nodes; write the content out or use "
                                                 "fewer aliases")
                if frame.anchor is not None:
                    self.open_anchors.discard(frame.anchor)
                    self.anchors[frame.anchor] = (value, size)
            elif cls is DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise _Invalid(e.start_mark, "a file holds a single YAML document; found another one")
                self.resolvers = _RESOLVERS_11 if e.version == (1, 1) else _RESOLVERS
                continue
            else:  # stream start/end, document end
                continue
            if not stack:
                root = value
                continue
            top = stack[-1]
            c = top.container
            top.size += size
            if type(c) is YamlList:
                c.append(value)
                c.pos.append((mark.line + 1, mark.column + 1))
            elif top.key_mark is None:  # a key
                if type(value) is YamlMap or type(value) is YamlList:
                    self.error(mark, "a mapping key must be a plain value, not a mapping or a list")
                    value = _NO_KEY
                elif value in c.pos:  # type: ignore[union-attr]
                    first = c.pos[value][0]  # type: ignore[union-attr]
                    self.error(mark, f"duplicate key '{value}' (first at line {first})")
                    value = _NO_KEY
                top.key = value
                top.key_mark = mark
            else:  # its value
                key, km = top.key, top.key_mark
                top.key_mark = None
                if key is _MERGE_KEY:
                    top.merges.append((value, mark, size))
                elif key is not _NO_KEY:
                    c[key] = value  # type: ignore[call-overload]
                    c.pos[key] = (km.line + 1, km.column + 1, mark.line + 1, mark.column + 1)  # type: ignore
        if root is _MERGE_KEY:
            root = "<<"
        return root

    def merge(self, frame: _Frame) -> None:
        """`<<: *base` or `<<: [*a, *b]`: the keys written in the mapping win, then the first source."""
        out = frame.container
        assert isinstance(out, YamlMap)
        for value, mark, _ in frame.merges:
            sources = value if type(value) is YamlList else [value]
            for i, src in enumerate(sources):
                if type(src) is not YamlMap:
                    at = value.pos[i] if type(value) is YamlList else None
                    loc = Location(self.file, *at) if at else self.loc(mark)
                    raise _InvalidAt(loc, "a merge key '<<' takes a mapping or a list of mappings")
                for k, v in src.items():
                    if k not in out:
                        out[k] = v
                        out.pos[k] = src.pos[k]

    def scalar(self, e: Any) -> Any:
        value: str = e.value
        if e.ctag is None:
            if not e.implicit[0]:
                return value  # quoted or block scalar
            if not value:
                return None
            tag = STR
            for t, rx in self.resolvers.get(value[0], ()):
                if rx.match(value):
                    tag = t
                    break
            if tag == STR:
                return value
        else:
            tag = str(e.ctag)
            if tag == STR or tag == "!":
                return value
        if tag == NULL:
            if value in ("", "~", "null", "Null", "NULL"):
                return None
        elif tag == BOOL:
            if value in ("true", "True", "TRUE") or (self.resolvers is _RESOLVERS_11 and value.lower() in _YES):
                return True
            if value in ("false", "False", "FALSE") or (self.resolvers is _RESOLVERS_11 and value.lower() in _NO):
                return False
        elif tag == INT:
            got = _to_int(value, self.resolvers is _RESOLVERS_11)
            if got is not None:
                return got
        elif tag == FLOAT:
            num = _to_float(value)
            if num is not None:
                return num
        elif tag == TIMESTAMP:
            got = _to_timestamp(value)
            if got is not None:
                return got
        elif tag == MERGE:
            return _MERGE_KEY
        else:
            raise _Invalid(e.start_mark, f"unsupported tag '{tag}'")
        raise _Invalid(e.start_mark, f"'{value}' is not a valid {tag.rsplit(':', 1)[-1]}")


class _InvalidAt(Exception):
    def __init__(self, loc: Location, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


_YES = ("y", "yes", "on", "true")
_NO = ("n", "no", "off", "false")


def _to_int(value: str, yaml11: bool = False) -> int | None:
    s = value.replace("_", "")
    sign = 1
    if s[:1] in ("-", "+"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    try:
        if yaml11 and ":" in s:  # sexagesimal
            n = 0
            for part in s.split(":"):
                n = n * 60 + int(part, 10)
            return sign * n
        if yaml11 and len(s) > 1 and s[0] == "0" and s[1].isdigit():
            return sign * int(s, 8)
        if s[:2] in ("0b", "0B"):
            return sign * int(s[2:], 2)
        if s[:2] in ("0o", "0O"):
            return sign * int(s[2:], 8)
        if s[:2] in ("0x", "0X"):
            return sign * int(s[2:], 16)
        return sign * int(s, 10)
    except ValueError:
        return None


def _to_float(value: str) -> float | None:
    s = value.replace("_", "").lower()
    if s in (".inf", "+.inf"):
        return math.inf
    if s == "-.inf":
        return -math.inf
    if s == ".nan":
        return math.nan
    try:
        return float(s)
    except ValueError:
        return None


_TIMESTAMPS: Any = None


def _to_timestamp(value: str) -> Any:
    global _TIMESTAMPS
    if _TIMESTAMPS is None:
        from ruamel.yaml.constructor import SafeConstructor

        _TIMESTAMPS = SafeConstructor()
    try:
        return _TIMESTAMPS.construct_yaml_timestamp(ScalarNode(TIMESTAMP, value, None, None))
    except (ValueError, TypeError, YAMLError):
        return None


# ----------------------------------------------------------------------------------------- parsing

_PURE_LOCK = threading.Lock()
_PURE: YAML | None = None


def _events_pure(text: str) -> Generator[Any, None, None]:
    """The events of ruamel.yaml's pure-Python parser (one shared instance, one file at a time)."""
    global _PURE
    with _PURE_LOCK:
        if _PURE is None:
            _PURE = YAML(typ="safe", pure=True)
        try:
            yield from _PURE.parse(text)
        finally:
            infos = getattr(_PURE, "doc_infos", None)
            if isinstance(infos, list):
                infos.clear()  # one entry per parse would pile up in a long-running process


def _events_c(text: str) -> Generator[Any, None, None]:
    parser = _CParser(text)
    get = parser.get_event
    while True:
        e = get()
        if e is None:
            return
        yield e


def _syntax_problem(exc: Exception, file: str) -> Problem:
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        return Problem(loc, f"invalid YAML: {exc.problem or exc.context}")
    return Problem(Location(file), f"invalid YAML: {exc}")


def load_yaml(text: str, file: str) -> tuple[Any, list[Problem]]:
    """Parse YAML keeping node positions. Returns (data, problems); data is None on any problem.

    Mappings come as `YamlMap`, sequences as `YamlList`, scalars as str, int, float, bool, None or
    dates (YAML 1.2 core schema, or 1.1 under a `%YAML 1.1` directive)."""
    if _CParser is not None:
        try:
            return _build(file, _events_c(text))
        except YAMLError:
            pass  # libyaml refuses some YAML 1.2 (`{source: o:Order/o:Id}`): the pure parser decides
    try:
        return _build(file, _events_pure(text))
    except YAMLError as exc:
        return None, [_syntax_problem(exc, file)]


def _build(file: str, events: Generator[Any, None, None]) -> tuple[Any, list[Problem]]:
    builder = _Builder(file)
    try:
        data = builder.run(events)
    except _Invalid as exc:
        loc = builder.loc(exc.mark) if exc.mark is not None else Location(file)
        return None, [*builder.problems, Problem(loc, f"invalid YAML: {exc.message}")]
    except _InvalidAt as exc:
        return None, [*builder.problems, Problem(exc.loc, f"invalid YAML: {exc.message}")]
    finally:
        events.close()
    if builder.problems:
        return None, builder.problems
    return data, []


# ------------------------------------------------------------------------------------------ where


class Where:
    """A node in a YAML file, able to locate its keys and items for error messages."""

    __slots__ = ("col", "file", "line", "node")

    def __init__(self, file: str, node: Any = None, line: int = 0, col: int = 0) -> None:
        self.file = file
        self.node = node
        if not line and isinstance(node, (YamlMap, YamlList)):
            line, col = node.line, node.col
        self.line = line
        self.col = col

    @property
    def location(self) -> Location:
        return Location(self.file, self.line, self.col)

    def key(self, key: Any) -> Location:
        """Location of a mapping key (falls back to the mapping itself)."""
        node = self.node
        if isinstance(node, YamlMap):
            try:
                p = node.pos[key]
            except (KeyError, TypeError):
                pass
            else:
                return Location(self.file, p[0], p[1])
        return self.location

    def value(self, key: Any) -> Location:
        """Location of a mapping value or a sequence item (falls back to the node itself)."""
        line, col = self._value_at(key)
        return Location(self.file, line, col)

    def _value_at(self, key: Any) -> tuple[int, int]:
        node = self.node
        if isinstance(node, YamlMap):
            try:
                p = node.pos[key]
            except (KeyError, TypeError):
                pass
            else:
                return p[2], p[3]
        elif isinstance(node, YamlList) and isinstance(key, int) and 0 <= key < len(node.pos):
            return node.pos[key]
        return self.line, self.col

    def child(self, key: Any) -> Where:
        """The Where of a nested node (mapping value or sequence item)."""
        node = self.node
        try:
            sub = node[key] if node is not None else None
        except (KeyError, IndexError, TypeError):
            sub = None
        if isinstance(sub, (YamlMap, YamlList)):
            return Where(self.file, sub)
        line, col = self._value_at(key)
        return Where(self.file, sub, line, col)


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
    """Deep-convert YAML containers to plain dicts and lists."""
    if isinstance(node, Mapping):
        return {str(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [to_plain(v) for v in node]
    return node
