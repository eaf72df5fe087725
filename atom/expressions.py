"""The expression language: Jinja2 in an immutable sandbox with StrictUndefined, compiled once.

Scope names: `doc` (the Document: `doc.text`, `doc.json`, `doc.xml`, `doc.props`), `docs` (the batch,
for batch templates), `process` (process properties), `execution` (id, process, start), `env`
(environment variables), and functions `jsonpath()`, `xpath()`, `now()`, `uuid()`.

A template that is exactly one `{{ expression }}` evaluates to a native value with `evaluate()`
(`"{{ doc.json.total > 1000 }}"` is a bool); `render()` always gives a string.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import uuid as _uuid
from collections.abc import Mapping
from typing import Any

import jinja2
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
        if attr.startswith("_"):
            return False
        return super().is_safe_attribute(obj, attr, value)


ENV = _Env(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
for _name in ("lipsum", "cycler", "joiner"):  # fewer globals: less to copy per evaluation
    ENV.globals.pop(_name, None)
ENV.globals.update(jsonpath=jsonpath, xpath=xpath, now=now, uuid=uuid)
ENV.filters.update(jsonpath=jsonpath, xpath=xpath)
ENV.filters["tojson"] = lambda v, indent=None: __import__("json").dumps(v, indent=indent, default=str)

_SOLE_EXPR = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.S)


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


class Template:
    """A compiled template. Constant strings skip Jinja entirely."""

    __slots__ = ("_expr", "_tmpl", "const", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.const: str | None = None
        self._tmpl: jinja2.Template | None = None
        self._expr: Any = None
        if "{{" not in source and "{%" not in source and "{#" not in source:
            self.const = source
            return
        try:
            m = _SOLE_EXPR.match(source)
            if m and "}}" not in m.group(1) and "{{" not in m.group(1):
                self._expr = ENV.compile_expression(m.group(1).strip(), undefined_to_none=False)
            self._tmpl = ENV.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ExpressionSyntaxError(f"invalid template '{source}': {exc.message}") from None

    @property
    def is_constant(self) -> bool:
        return self.const is not None

    def render(self, scope: Mapping[str, Any]) -> str:
        if self.const is not None:
            return self.const
        try:
            return self._tmpl.render(scope)  # type: ignore[union-attr]
        except Exception as exc:
            raise _eval_error(self.source, exc) from None

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        """Native value for a sole `{{ expr }}`, else the rendered string."""
        if self.const is not None:
            return self.const
        if self._expr is None:
            return self.render(scope)
        try:
            return self._expr(**scope)
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
