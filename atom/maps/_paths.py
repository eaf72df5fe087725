"""Source paths compiled to getters: `get(context, run) -> value`.

JSONPaths like `$.a.b[0]` become direct key walks; other JSONPaths go through jsonpath-ng. Simple
XPaths (`Customer/Name`, `Line/@no`, `o:Header/o:Id`) become `find()` calls with names resolved to
`{uri}local` once; other XPaths are compiled lxml XPath objects. A getter never raises for missing
data: it gives None (a value) or an empty list (items).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from lxml import etree

from ..expressions import ExpressionSyntaxError, compile_jsonpath, compile_xpath, is_definite

if TYPE_CHECKING:
    from ._rules import Run

Getter = Callable[[Any, "Run"], Any]

# ------------------------------------------------------------------------------------------------ JSON

_NAME = r"[A-Za-z_@][A-Za-z0-9_@\-]*"
_STEP = re.compile(rf"\.({_NAME})|\[(-?\d+)\]|\['([^'\\]*)'\]|\[\"([^\"\\]*)\"\]")
_SIMPLE_JSON = re.compile(rf"^\$((?:\.{_NAME}|\[-?\d+\]|\['[^'\\]*'\]|\[\"[^\"\\]*\"\])*)(\[\*\]|\.\*)?$")


def json_steps(path: str) -> tuple[tuple[str | int, ...], bool] | None:
    """(keys, ends with [*]) for a simple JSONPath, or None."""
    m = _SIMPLE_JSON.match(path)
    if not m:
        return None
    keys: list[str | int] = []
    for s in _STEP.finditer(m.group(1)):
        if s.group(2) is not None:
            keys.append(int(s.group(2)))
        else:
            keys.append(s.group(1) or s.group(3) or s.group(4) or "")
    return tuple(keys), m.group(2) is not None


def check_jsonpath(path: str) -> None:
    """Raise ExpressionSyntaxError if the JSONPath does not compile."""
    compile_jsonpath(path)


def _walk(keys: tuple[str | int, ...]) -> Getter:
    n = len(keys)
    if n == 0:
        return lambda c, r: c
    if n == 1:
        k0 = keys[0]

        def g1(c: Any, r: Run) -> Any:
            try:
                return c[k0]
            except (KeyError, IndexError, TypeError):
                return None
        return g1
    if n == 2:
        k0, k1 = keys

        def g2(c: Any, r: Run) -> Any:
            try:
                return c[k0][k1]
            except (KeyError, IndexError, TypeError):
                return None
        return g2
    if n == 3:
        k0, k1, k2 = keys

        def g3(c: Any, r: Run) -> Any:
            try:
                return c[k0][k1][k2]
            except (KeyError, IndexError, TypeError):
                return None
        return g3

    def gn(c: Any, r: Run) -> Any:
        try:
            for k in keys:
                c = c[k]
        except (KeyError, IndexError, TypeError):
            return None
        return c
    return gn


def _guard_str_index(g: Getter, keys: tuple[str | int, ...]) -> Getter:
    # c["a"] on a string raises TypeError, but c[0] on a string gives a character: JSONPath gives nothing
    if not any(isinstance(k, int) for k in keys):
        return g

    def guarded(c: Any, r: Run) -> Any:
        cur = c
        for k in keys:
            if isinstance(k, int):
                if type(cur) is not list:
                    return None
            elif type(cur) is not dict:
                return None
            try:
                cur = cur[k]
            except (KeyError, IndexError):
                return None
        return cur
    return guarded


def json_value(path: str) -> Getter:
    """Getter of one value: a definite path gives the value or None, others a list of matches."""
    check_jsonpath(path)
    simple = json_steps(path)
    if simple is not None:
        keys, star = simple
        base = _guard_str_index(_walk(keys), keys)
        if not star:
            if all(type(k) is str for k in keys):
                base.walk_keys = keys  # type: ignore[attr-defined]  # generated map code inlines the walk
            return base

        def matches(c: Any, r: Run) -> Any:  # `$.a[*]`: the items of a list, the values of an object
            v = base(c, r)
            if type(v) is list:
                return list(v)
            if type(v) is dict:
                return list(v.values())
            return []
        return matches
    jp = compile_jsonpath(path)
    if is_definite(path):
        def first(c: Any, r: Run) -> Any:
            for m in jp.find(c):
                return m.value
            return None
        return first
    return lambda c, r: [m.value for m in jp.find(c)]


def as_items(value: Any) -> list[Any]:
    """Items of a repeating group: a list as is, nothing as none, anything else as one item."""
    if type(value) is list:
        return value
    if value is None:
        return []
    return [value]


def json_items(path: str) -> Getter:
    """Getter of the items of a repeating group (always a list)."""
    check_jsonpath(path)
    simple = json_steps(path)
    if simple is not None:
        keys, star = simple
        base = _guard_str_index(_walk(keys), keys)
        if star:
            def star_items(c: Any, r: Run) -> Any:
                v = base(c, r)
                if type(v) is list:
                    return v
                if type(v) is dict:
                    return list(v.values())
                return []
            return star_items

        def items(c: Any, r: Run) -> Any:
            v = base(c, r)
            if type(v) is list:
                return v
            return [] if v is None else [v]
        return items
    jp = compile_jsonpath(path)
    if is_definite(path):
        def one(c: Any, r: Run) -> Any:
            for m in jp.find(c):
                return as_items(m.value)
            return []
        return one
    return lambda c, r: [m.value for m in jp.find(c)]


# ------------------------------------------------------------------------------------------------- XML

_QNAME = r"(?:[A-Za-z_][\w.\-]*:)?[A-Za-z_][\w.\-]*"
_SIMPLE_XPATH = re.compile(rf"^(?:\./)?((?:{_QNAME})(?:/{_QNAME})*)?(?:(?(1)/)(@{_QNAME}|text\(\)))?$")


def element_text(el: Any) -> str:
    """The text content of an element (all descendant text, like XPath string())."""
    if len(el):
        return "".join(el.itertext())
    t = el.text
    return "" if t is None else t  # type: ignore[no-any-return]


def _clark(qname: str, ns: Mapping[str, str], path: str) -> str:
    if ":" in qname:
        prefix, local = qname.split(":", 1)
        uri = ns.get(prefix)
        if uri is None:
            raise ExpressionSyntaxError(f"unknown namespace prefix '{prefix}' in XPath '{path}' "
                                        "(declare it under namespaces)")
        return f"{{{uri}}}{local}"
    return qname


def _xpath_result(r: Any) -> Any:
    if type(r) is list:
        if not r:
            return None
        r = r[0]
        if isinstance(r, etree._Element):
            return element_text(r)
        return str(r) if not isinstance(r, (bool, float, int)) else r
    if type(r) is float and r.is_integer() and abs(r) < 2**53:
        return int(r)
    return r


def _general_xpath(path: str, ns: Mapping[str, str]) -> Any:
    xp = compile_xpath(path, ns)
    try:  # unknown prefixes, variables and functions only show on evaluation
        xp(etree.Element("probe"))
    except etree.XPathEvalError as exc:
        raise ExpressionSyntaxError(f"invalid XPath '{path}': {exc}") from None
    return xp


def xml_value(path: str, ns: Mapping[str, str]) -> Getter:
    """Getter of one value relative to the context element: text of the first match, an attribute
    value, or the result of an XPath function (numbers that are whole become int); None if no match."""
    m = _SIMPLE_XPATH.match(path)
    if path == ".":
        return context_text
    if m and (m.group(1) or m.group(2)):
        steps = m.group(1)
        tags = [_clark(s, ns, path) for s in steps.split("/")] if steps else []
        find = _child_finder(tags)
        last = m.group(2)
        if last is None:
            assert find is not None
            if len(tags) == 1:
                return _child_text(tags[0])

            def elem(c: Any, r: Run) -> Any:
                el = find(c, r)
                return None if el is None else element_text(el)
            return elem
        if last == "text()":
            assert find is not None

            def text(c: Any, r: Run) -> Any:
                el = find(c, r)
                return None if el is None else el.text
            return text
        attr = _clark(last[1:], ns, path)
        if find is None:
            def own_attr(c: Any, r: Run) -> Any:
                try:
                    return c.get(attr)
                except (AttributeError, TypeError):
                    return None
            return own_attr

        def child_attr(c: Any, r: Run) -> Any:
            el = find(c, r)
            return None if el is None else el.get(attr)
        return child_attr
    xp = _general_xpath(path, ns)

    def general(c: Any, r: Run) -> Any:
        try:
            return _xpath_result(xp(c))
        except (etree.XPathEvalError, TypeError):
            return None
    return general


_NO_KIDS: dict[Any, Any] = {}


def kids(c: Any, r: Run) -> dict[Any, Any]:
    """First child element of `c` by tag, built once per element and document (cached on the run)."""
    cache = r.kids
    try:
        got = cache.get(c)
    except TypeError:  # an unhashable context is not an element
        return _NO_KIDS
    if got is None:
        got = {}
        try:
            for ch in c:
                t = ch.tag
                if t not in got:
                    got[t] = ch
        except (AttributeError, TypeError):
            got = _NO_KIDS
        cache[c] = got
    return got


def _child_text(tag: str) -> Getter:
    def child_text(c: Any, r: Run) -> Any:
        el = kids(c, r).get(tag)
        if el is None:
            return None
        if len(el):
            return "".join(el.itertext())
        t = el.text
        return "" if t is None else t
    return child_text


def _child_finder(tags: list[str]) -> Callable[[Any, Run], Any] | None:
    """First element at a child path (`A/B`), like XPath's first match; None if there is none."""
    if not tags:
        return None
    if len(tags) == 1:
        tag = tags[0]
        return lambda c, r: kids(c, r).get(tag)
    clark = "/".join(tags)

    def many(c: Any, r: Run) -> Any:
        # first child at each step; if that dead-ends, a later branch may match: ask ElementPath
        el = c
        for t in tags:
            el = kids(el, r).get(t)
            if el is None:
                try:
                    return c.find(clark)
                except (AttributeError, TypeError):
                    return None
        return el
    return many


def context_text(c: Any, r: Run) -> Any:
    if isinstance(c, etree._Element):
        return element_text(c)
    return c


def xml_items(path: str, ns: Mapping[str, str]) -> Getter:
    """Getter of the items of a repeating group: the matched elements (or values), in document order."""
    m = _SIMPLE_XPATH.match(path)
    if m and m.group(1) and not m.group(2):
        tags = [_clark(s, ns, path) for s in m.group(1).split("/")]
        if len(tags) == 1:
            tag = tags[0]

            def children(c: Any, r: Run) -> Any:
                try:
                    return list(c.iterchildren(tag))
                except (AttributeError, TypeError):
                    return []
            return children
        clark = "/".join(tags)

        def find_all(c: Any, r: Run) -> Any:
            try:
                return c.findall(clark)
            except (AttributeError, TypeError):
                return []
        return find_all
    xp = _general_xpath(path, ns)

    def general(c: Any, r: Run) -> Any:
        try:
            got = xp(c)
        except (etree.XPathEvalError, TypeError):
            return []
        return got if type(got) is list else [got]
    return general


# --------------------------------------------------------------------------------------------- columns


def column_name(name: str) -> Getter:
    def col(c: Any, r: Run) -> Any:
        try:
            return c.get(name)
        except AttributeError:
            return None
    return col


def column_index(index: int) -> Getter:
    """1-based column position, resolved against the columns of the document being read."""
    i = index - 1

    def col(c: Any, r: Run) -> Any:
        cols = r.columns
        if i >= len(cols):
            return None
        try:
            return c.get(cols[i])
        except AttributeError:
            return None
    return col
