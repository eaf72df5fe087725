"""The expression language: Jinja2 in an immutable sandbox with StrictUndefined, compiled once.

Scope names: `doc` (the Document: `doc.text`, `doc.json`, `doc.xml`, `doc.props`), `docs` (the batch,
for batch templates), `process` (process properties), `execution` (id, process, start), `env`
(environment variables), and functions `jsonpath()`, `xpath()`, `now()`, `uuid()`.

A template that is exactly one `{{ expression }}` evaluates to a native value with `evaluate()`
(`"{{ doc.json.total > 1000 }}"` is a bool); `render()` always gives a string.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import threading
import uuid as _uuid
from collections.abc import Callable, Mapping
from typing import Any

import jinja2
import orjson
from jinja2 import nodes
from jinja2.runtime import Context, EvalContext, Undefined, missing
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jsonpath_ng import JSONPath
from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
from jsonpath_ng.ext import parse as _jsonpath_parse
from lxml import etree

from .errors import DocumentError


class ExpressionSyntaxError(ValueError):
    """A template or expression that does not compile (raised at load time)."""


class ExpressionError(DocumentError):
    """A template failed while being evaluated for a document."""


# ----------------------------------------------------------------------------------------- functions

_JSONPATH_CACHE: dict[str, JSONPath] = {}
_INDEFINITE = re.compile(r"\*|\.\.|\?|\[[^\]]*[:,][^\]]*\]")


def compile_jsonpath(path: str) -> JSONPath:
    """Compile (and cache) a JSONPath; raises ExpressionSyntaxError with the path on failure."""
    got = _JSONPATH_CACHE.get(path)
    if got is None:
        try:
            got = _jsonpath_parse(path)
        except (JsonPathLexerError, JsonPathParserError, Exception) as exc:
            raise ExpressionSyntaxError(f"invalid JSONPath '{path}': {exc}") from None
        _JSONPATH_CACHE[path] = got
    return got


def is_definite(path: str) -> bool:
    """True if a JSONPath selects at most one value (no wildcard, recursion, filter, slice, union)."""
    return not _INDEFINITE.search(path)


def jsonpath(value: Any, path: str) -> Any:
    """Evaluate a JSONPath. A definite path (`$.a.b`) gives the value or None; others give a list."""
    if hasattr(value, "json") and not isinstance(value, Mapping):
        value = value.json
    matches = [m.value for m in compile_jsonpath(path).find(value)]
    if is_definite(path):
        return matches[0] if matches else None
    return matches


_XPATH_CACHE: dict[tuple[str, tuple[tuple[str, str], ...]], etree.XPath] = {}


def compile_xpath(path: str, ns: Mapping[str, str] | None = None) -> etree.XPath:
    key = (path, tuple(sorted((ns or {}).items())))
    got = _XPATH_CACHE.get(key)
    if got is None:
        try:
            got = etree.XPath(path, namespaces=dict(ns or {}), smart_strings=False)
        except etree.XPathSyntaxError as exc:
            raise ExpressionSyntaxError(f"invalid XPath '{path}': {exc}") from None
        _XPATH_CACHE[key] = got
    return got


def xpath_value(result: Any) -> Any:
    """Normalise an XPath result: nodes become their text; one match a scalar, none None, more a list."""
    if isinstance(result, list):
        vals = [_node_text(r) for r in result]
        if not vals:
            return None
        return vals[0] if len(vals) == 1 else vals
    return result


def _node_text(node: Any) -> Any:
    if isinstance(node, etree._Element):
        return "".join(str(t) for t in node.itertext())
    return str(node) if not isinstance(node, (int, float, bool)) else node


def xpath(doc: Any, path: str, ns: Mapping[str, str] | None = None) -> Any:
    """Evaluate an XPath on a document (or element). Text of the match, a list for many, None for none."""
    node = doc.xml if hasattr(doc, "xml") and not isinstance(doc, etree._Element) else doc
    try:
        return xpath_value(compile_xpath(path, ns)(node))
    except etree.XPathEvalError as exc:
        raise ExpressionError(f"XPath '{path}' failed: {exc}") from None


def now(fmt: str | None = None) -> str:
    """The current UTC time, ISO 8601 (`2026-11-22T10:00:00.123456+00:00`), or formatted by strftime."""
    t = _dt.datetime.now(_dt.UTC)
    return t.strftime(fmt) if fmt else t.isoformat()


def uuid() -> str:
    return str(_uuid.uuid4())


# ----------------------------------------------------------------------------------------- environment

#: sandbox verdicts per (type of the object, attribute name): Jinja's checks depend on nothing else
_VERDICTS: dict[tuple[type, str], bool] = {}
_VERDICTS_MAX = 20_000


class _Env(ImmutableSandboxedEnvironment):
    def getattr(self, obj: Any, attribute: str) -> Any:
        # Data first: `doc.json.items` is the "items" field, not dict.items.
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # The sandbox's verdict (no leading underscore, no internal attribute of functions, frames,
        # generators..., no method that modifies a list, dict, set or deque) depends only on the
        # object's type and the attribute's name, so it is computed once per pair.
        key = (type(obj), attr)
        verdict = _VERDICTS.get(key)
        if verdict is None:
            verdict = not attr.startswith("_") and super().is_safe_attribute(obj, attr, value)
            if len(_VERDICTS) >= _VERDICTS_MAX:
                _VERDICTS.clear()
            _VERDICTS[key] = verdict
        return verdict


_TOJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def tojson(value: Any, indent: int | None = None) -> str:
    """The `tojson` filter: JSON text of a value; keys keep their order, other types become str() of them.

    orjson writes it (compact; characters beyond ASCII escaped as `\\uXXXX`, as the json module does);
    what orjson cannot write (integers beyond 64 bits, an indent other than 2) goes through the json
    module with the same rules.
    """
    if indent is None or indent == 2:
        try:
            opts = _TOJSON_OPTIONS | orjson.OPT_INDENT_2 if indent else _TOJSON_OPTIONS
            text = orjson.dumps(value, default=str, option=opts).decode()
        except orjson.JSONEncodeError:
            pass
        else:
            return text if text.isascii() else _NON_ASCII.sub(_escape, text)
    return json.dumps(value, indent=indent, default=str)


#: outside the ASCII range: only inside JSON strings in orjson's output
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _escape(m: re.Match[str]) -> str:
    n = ord(m.group())
    if n < 0x10000:
        return f"\\u{n:04x}"
    n -= 0x10000
    return f"\\u{0xD800 | (n >> 10):04x}\\u{0xDC00 | (n & 0x3FF):04x}"


ENV = _Env(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
for _name in ("lipsum", "cycler", "joiner"):
    ENV.globals.pop(_name, None)
ENV.globals.update(jsonpath=jsonpath, xpath=xpath, now=now, uuid=uuid)
ENV.filters.update(jsonpath=jsonpath, xpath=xpath, tojson=tojson)
_GLOBALS = ENV.globals


class EnvView(Mapping[str, str]):
    """Read-only view of the environment for templates (`env.HOME`)."""

    def __getitem__(self, key: str) -> str:
        return os.environ[key]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(os.environ)

    def __len__(self) -> int:
        return len(os.environ)

    def __getattr__(self, key: str) -> str:
        try:
            return os.environ[key]
        except KeyError:
            raise AttributeError(key) from None


ENV_VIEW = EnvView()


# ------------------------------------------------------------------------------------------ evaluation


class _Context(Context):
    """The context of one evaluation: names are read from the caller's scope, then from the globals.

    Jinja's own contexts copy the globals and the scope into a new dict for every render; this one
    reads the scope in place, so an evaluation costs no copy.
    """

    def __init__(self, scope: Mapping[str, Any], blocks: Mapping[str, Any] | None = None) -> None:
        # Not Context.__init__: it copies the globals' names into a set.
        self.parent = scope  # type: ignore[assignment]
        self.vars = {}
        self.environment = ENV
        self.eval_ctx = EvalContext(ENV, None)
        self.exported_vars = set()
        self.name = None
        self.globals_keys = _NO_NAMES  # type: ignore[assignment]
        self.blocks = {k: [v] for k, v in blocks.items()} if blocks else {}

    def resolve_or_missing(self, key: str) -> Any:
        if key in self.vars:
            return self.vars[key]
        v = self.parent.get(key, missing)
        if v is missing:
            return _GLOBALS.get(key, missing)
        return v

    def __contains__(self, name: str) -> bool:
        return name in self.vars or name in self.parent or name in _GLOBALS

    def get_all(self) -> dict[str, Any]:
        return {**_GLOBALS, **self.parent, **self.vars}


_NO_NAMES: frozenset[str] = frozenset()


def _undefined(value: Undefined) -> None:
    """A sole expression gave an undefined value: raise the error a strict undefined carries (a
    missing name or key, an unsafe attribute); the plain undefined of `x if c` without `else` is None."""
    str(value)


Lookup = Callable[[Mapping[str, Any]], Any]


def _name_path(node: nodes.Node) -> tuple[str, tuple[tuple[bool, Any], ...]] | None:
    """`a.b['c'].0` as ('a', ((True, 'b'), (False, 'c'), (False, 0))); None for any other expression."""
    steps: list[tuple[bool, Any]] = []
    while True:
        if isinstance(node, nodes.Getattr):
            steps.append((True, node.attr))
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
                and type(node.arg.value) in (str, int):
            steps.append((False, node.arg.value))
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            steps.reverse()
            return node.name, tuple(steps)
        else:
            return None
        node = node.node  # type: ignore[attr-defined]


def _lookup(name: str, steps: tuple[tuple[bool, Any], ...]) -> Lookup:
    """Direct lookups for a name path, with the sandbox's semantics: JSON objects (dicts) are read
    directly, anything else through the sandboxed getattr / getitem; a missing name, key or
    attribute raises the error Jinja's strict undefined would."""
    getattr_, getitem = ENV.getattr, ENV.getitem

    def lookup(scope: Mapping[str, Any]) -> Any:
        try:
            obj = scope[name]
        except KeyError:
            obj = _GLOBALS.get(name, missing)
            if obj is missing:
                obj = ENV.undefined(name=name)
        for is_attr, key in steps:
            if type(obj) is dict:
                try:
                    obj = obj[key]
                    continue
                except KeyError:
                    pass
            obj = getattr_(obj, key) if is_attr else getitem(obj, key)
        if isinstance(obj, Undefined):
            return _undefined(obj)
        return obj

    if len(steps) == 1 and steps[0][0]:  # `item.qty`: the commonest, one attribute
        key = steps[0][1]

        def lookup1(scope: Mapping[str, Any]) -> Any:
            try:
                obj = scope[name]
                if type(obj) is dict:
                    return obj[key]
            except KeyError:
                pass
            return lookup(scope)
        lookup1.name_key = (name, key)  # type: ignore[attr-defined]
        return lookup1
    return lookup


def _simple(node: nodes.Node) -> Lookup | None:
    """A lookup for an expression that needs no Jinja code: a constant or a name path."""
    if isinstance(node, nodes.Const):
        value = node.value
        return lambda scope: value
    got = _name_path(node)
    return _lookup(*got) if got is not None else None


def _check(tree: nodes.Template) -> None:
    """What Jinja's code generator would refuse, checked without generating code (it is deferred to
    first use): unknown filters and tests outside a condition, assignments to `loop`, blocks twice."""
    seen_blocks: set[str] = set()

    def walk(node: nodes.Node, soft: bool) -> None:
        if isinstance(node, nodes.Filter) and not soft and node.name not in ENV.filters:
            raise jinja2.TemplateAssertionError(f"No filter named {node.name!r}.", node.lineno)
        if isinstance(node, nodes.Test) and not soft and node.name not in ENV.tests:
            raise jinja2.TemplateAssertionError(f"No test named {node.name!r}.", node.lineno)
        if isinstance(node, nodes.For):
            target = node.target
            for n in (target, *target.find_all(nodes.Name)):
                if isinstance(n, nodes.Name) and n.ctx == "store" and n.name == "loop":
                    raise jinja2.TemplateAssertionError(
                        "Can't assign to special loop variable in for-loop target", n.lineno)
        if isinstance(node, nodes.Block):
            if node.name in seen_blocks:
                raise jinja2.TemplateAssertionError(f"block {node.name!r} defined twice", node.lineno)
            seen_blocks.add(node.name)
        # as Jinja: inside a condition (`{% if %}`, `x if c else y`), unknown names fail when used
        soft = soft or isinstance(node, nodes.If | nodes.CondExpr)
        for child in node.iter_child_nodes():
            walk(child, soft)

    walk(tree, False)


class _Code:
    """What one source text compiles to, shared by every Template of that text.

    `evaluate(scope)` and `render(scope)` are plain functions chosen at analysis: joined text and
    direct lookups when every `{{ }}` is a name path or a constant (no Jinja at run time); a compiled
    expression for a sole `{{ expression }}`; a compiled template otherwise. Jinja code is generated
    at the first evaluation, not at load time (the syntax is checked at load time).
    """

    __slots__ = ("_raw", "evaluate", "lock", "render", "source")

    def __init__(self, source: str, tree: nodes.Template) -> None:
        self.source = source
        self.lock = threading.Lock()
        self.evaluate: Callable[[Mapping[str, Any]], Any]
        self.render: Callable[[Mapping[str, Any]], str]
        body = tree.body
        if len(body) == 1 and isinstance(body[0], nodes.Output):
            items = body[0].nodes
            exprs = [n for n in items if not isinstance(n, nodes.TemplateData)]
            sole = len(exprs) == 1 and all(
                not n.data.strip() for n in items if isinstance(n, nodes.TemplateData))  # type: ignore[attr-defined]
            lookups = [_simple(n) for n in exprs]
            if all(g is not None for g in lookups):
                self._joined(items, lookups, sole)  # type: ignore[arg-type]
                return
            if sole:
                i = next(i for i, n in enumerate(items) if not isinstance(n, nodes.TemplateData))
                before = "".join(n.data for n in items[:i])  # type: ignore[attr-defined]
                after = "".join(n.data for n in items[i + 1:])  # type: ignore[attr-defined]
                self._raw = self._first_expression
                self.evaluate = self._evaluate_expression
                self.render = lambda scope: before + str(self._raw(scope)) + after
                return
        elif not body:
            self._joined([], [], False)
            return
        self.evaluate = self.render = self._first_render

    def _joined(self, items: list[nodes.Node], lookups: list[Lookup], sole: bool) -> None:
        if sole:
            get = lookups[0]
            i = next(i for i, n in enumerate(items) if not isinstance(n, nodes.TemplateData))
            before = "".join(n.data for n in items[:i])  # type: ignore[attr-defined]
            after = "".join(n.data for n in items[i + 1:])  # type: ignore[attr-defined]
            self.evaluate = get
            if before or after:
                self.render = lambda scope: before + str(get(scope)) + after
            else:
                self.render = lambda scope: str(get(scope))
            return
        parts: list[str | Lookup] = []
        it = iter(lookups)
        for n in items:
            if isinstance(n, nodes.TemplateData):
                if parts and isinstance(parts[-1], str):
                    parts[-1] += n.data
                else:
                    parts.append(n.data)
            else:
                parts.append(next(it))
        frozen = tuple(parts)

        def render(scope: Mapping[str, Any]) -> str:
            return "".join([p if type(p) is str else str(p(scope)) for p in frozen])  # type: ignore[operator]
        self.evaluate = self.render = render

    def _evaluate_expression(self, scope: Mapping[str, Any]) -> Any:
        v = self._raw(scope)
        if isinstance(v, Undefined):
            return _undefined(v)
        return v

    def _first_expression(self, scope: Mapping[str, Any]) -> Any:
        with self.lock:
            if self._raw == self._first_expression:
                tree = ENV.parse(self.source)
                expr = next(n for n in tree.body[0].nodes  # type: ignore[attr-defined]
                            if not isinstance(n, nodes.TemplateData))
                body = [nodes.Assign(nodes.Name("result", "store"), expr, lineno=1)]
                root = ENV.from_string(nodes.Template(body, lineno=1)).root_render_func

                def raw(scope: Mapping[str, Any]) -> Any:
                    ctx = _Context(scope)
                    for _ in root(ctx):
                        pass
                    return ctx.vars["result"]
                self._raw = raw
        return self._raw(scope)

    def _first_render(self, scope: Mapping[str, Any]) -> str:
        with self.lock:
            if self.render == self._first_render:
                t = ENV.from_string(self.source)
                root, blocks = t.root_render_func, t.blocks

                def render(scope: Mapping[str, Any]) -> str:
                    return "".join(root(_Context(scope, blocks)))
                self.evaluate = self.render = render
        return self.render(scope)


_CODES: dict[str, _Code] = {}
_CODES_MAX = 20_000


def _code(source: str) -> _Code:
    """The analysed code of a source text, from the cache (sources repeat across processes)."""
    code = _CODES.get(source)
    if code is None:
        try:
            tree = ENV.parse(source)
            _check(tree)
        except jinja2.TemplateSyntaxError as exc:
            raise ExpressionSyntaxError(f"invalid template '{source}': {_syntax_message(source, exc)}") from None
        code = _Code(source, tree)
        if len(_CODES) >= _CODES_MAX:
            _CODES.clear()
        _CODES[source] = code
    return code


_SOLE_EXPR = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.S)


def _syntax_message(source: str, exc: jinja2.TemplateSyntaxError) -> str | None:
    """The message of a syntax error; for a sole `{{ expression }}`, the expression parser's (it says
    where the expression ends: `unexpected 'end of template'`)."""
    m = _SOLE_EXPR.match(source)
    if m and "}}" not in m.group(1) and "{{" not in m.group(1):
        try:
            ENV.compile_expression(m.group(1).strip())
        except jinja2.TemplateSyntaxError as inner:
            return inner.message
    return exc.message


class Template:
    """A template, checked at load time. Constant strings skip Jinja entirely; the others share, per
    source text, code compiled at first use (see `_Code`)."""

    __slots__ = ("_code", "const", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.const: str | None = None
        self._code: _Code | None = None
        if "{{" not in source and "{%" not in source and "{#" not in source:
            self.const = source
            return
        self._code = _code(source)

    @property
    def is_constant(self) -> bool:
        return self.const is not None

    def render(self, scope: Mapping[str, Any]) -> str:
        """The text of the template."""
        if self.const is not None:
            return self.const
        try:
            return self._code.render(scope)  # type: ignore[union-attr]
        except Exception as exc:
            raise _eval_error(self.source, exc) from None

    def name_key(self) -> tuple[str, str] | None:
        """(name, key) when the template is a sole `{{ name.key }}`: code compiled from it may read
        `scope[name][key]` of a dict in place (and call `evaluate` for anything else)."""
        code = self._code
        if code is None:
            return None
        return getattr(code.evaluate, "name_key", None)

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        """Native value for a sole `{{ expr }}`, else the rendered string. Reading something that does
        not exist raises ExpressionError naming the template and what was undefined."""
        if self.const is not None:
            return self.const
        try:
            return self._code.evaluate(scope)  # type: ignore[union-attr]
        except Exception as exc:
            raise _eval_error(self.source, exc) from None

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


class Constant:
    """A literal (non-string) value that quacks like a Template."""

    __slots__ = ("value",)
    is_constant = True

    def __init__(self, value: Any) -> None:
        self.value = value

    @property
    def source(self) -> Any:
        return self.value

    def render(self, scope: Mapping[str, Any]) -> str:
        v = self.value
        if isinstance(v, bool):
            return "true" if v else "false"
        return "" if v is None else str(v)

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        return self.value


def compile_template(source: str) -> Template:
    return Template(source)


def compile_value(value: Any) -> Template | Constant:
    if isinstance(value, str):
        return Template(value)
    return Constant(value)


def _eval_error(source: str, exc: Exception) -> ExpressionError:
    if isinstance(exc, DocumentError) and not isinstance(exc, ExpressionError):
        return ExpressionError(f"in '{source}': {exc}")
    if isinstance(exc, ExpressionError):
        return exc
    if isinstance(exc, SecurityError):
        return ExpressionError(f"in '{source}': not allowed: {exc}")
    if isinstance(exc, jinja2.UndefinedError):
        return ExpressionError(f"in '{source}': {exc.message}")
    return ExpressionError(f"in '{source}': {type(exc).__name__}: {exc}")


def truthy(value: Any) -> bool:
    """Truth of an evaluated condition. Strings 'false', '0', 'no', '' and 'none' are false."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "none", "null")
    return bool(value)
