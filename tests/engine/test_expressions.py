"""The expression sandbox, JSONPath/XPath helpers and hostile XML."""

from __future__ import annotations

import datetime as dt
import json
import time
from decimal import Decimal
from typing import Any

import pytest

from atom.document import Document
from atom.errors import DocumentError
from atom.expressions import (
    ENV,
    ExpressionError,
    ExpressionSyntaxError,
    compile_template,
    jsonpath,
    tojson,
    xpath,
)


def scope(doc: Document) -> dict:  # type: ignore[type-arg]
    return {"doc": doc, "process": {"p": "1"}, "execution": {}, "env": {}}


def test_sole_expression_keeps_its_type() -> None:
    d = Document(b'{"total": 1500, "items": [{"q": 1}, {"q": 2}]}')
    assert compile_template("{{ doc.json.total > 1000 }}").evaluate(scope(d)) is True
    assert compile_template("{{ doc.json['items'] | length }}").evaluate(scope(d)) == 2
    assert compile_template("{{ doc.json.items | length }}").render(scope(d)) == "2"  # data before methods
    assert compile_template("n={{ doc.json.total }}").evaluate(scope(d)) == "n=1500"


def test_jsonpath_and_xpath_functions() -> None:
    d = Document(b'{"a": {"b": 3}, "items": [{"q": 1}, {"q": 2}]}')
    assert jsonpath(d.json, "$.a.b") == 3
    assert jsonpath(d.json, "$.items[*].q") == [1, 2]
    assert jsonpath(d.json, "$.nope") is None
    x = Document(b'<o xmlns:n="urn:n"><n:id>7</n:id><l>a</l><l>b</l></o>')
    assert xpath(x, "/o/n:id", {"n": "urn:n"}) == "7"
    assert xpath(x, "/o/l") == ["a", "b"]
    assert xpath(x, "count(/o/l)") == 2.0
    t = compile_template("{{ xpath(doc, '/o/l[2]') }}-{{ uuid()|length }}-{{ now('%Y') | length }}")
    assert t.render(scope(x)) == "b-36-4"


@pytest.mark.parametrize("source", [
    "{{ doc.__class__.__mro__ }}",
    "{{ ''.__class__.__subclasses__() }}",
    "{{ doc.props.update({'x': 1}) }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ range.__self__ }}",
])
def test_sandbox_refuses_python_internals(source: str) -> None:
    with pytest.raises(ExpressionError):
        compile_template(source).render(scope(Document(b"{}")))


@pytest.mark.parametrize("source", [
    "{{ doc.__class__ }}",
    "{{ doc.json.__class__ }}",
    "{{ doc['__class__'] }}",
    "{{ doc.json.update }}",
    "{{ doc.props.setdefault }}",
    "{{ doc.json.x.__class__.__mro__ }}",
])
def test_sandbox_refuses_internals_on_the_direct_lookup_path_too(source: str) -> None:
    d = Document(b'{"x": 1}')
    for _ in range(2):  # the second time from the cached verdict
        with pytest.raises(ExpressionError, match=r"not allowed|unsafe"):
            compile_template(source).evaluate(scope(d))
        with pytest.raises(ExpressionError, match=r"not allowed|unsafe"):
            compile_template(f"x {source}").render(scope(d))
    assert compile_template("{{ doc.json.keys() | list }}").evaluate(scope(d)) == ["x"]  # a safe method


def test_evaluate_of_missing_data_raises_naming_template_and_what() -> None:
    s = scope(Document(b'{"a": {"b": 1}, "flag": false}'))
    cases = {
        "{{ doc.json.missing }}": "'dict object' has no attribute 'missing'",
        "{{ doc.json.a.c.d }}": "'dict object' has no attribute 'c'",
        "{{ doc.json['nope'] }}": "'dict object' has no attribute 'nope'",
        "{{ nothing.here }}": "'nothing' is undefined",
        # a computed sole expression that gives an undefined value
        "{{ doc.json.a if doc.json.flag else doc.json.other }}": "'dict object' has no attribute 'other'",
    }
    for source, what in cases.items():
        t = compile_template(source)
        with pytest.raises(ExpressionError) as info:
            t.evaluate(s)
        assert str(info.value) == f"in '{source}': {what}"
        with pytest.raises(ExpressionError, match=r"has no attribute|is undefined"):
            t.render(s)


def test_conditional_without_else_is_none_natively_and_empty_text() -> None:
    t = compile_template("{{ 'x' if doc.json.flag }}")
    s = scope(Document(b'{"flag": false}'))
    assert t.evaluate(s) is None
    assert t.render(s) == ""


PATHS = [
    "{{ doc.json.total }}", "{{ doc.json.items }}", "{{ doc.json['items'][1].q }}", "{{ doc.json.items.0.q }}",
    "{{ doc.props.tier }}", "{{ process.p }}", "{{ doc.json.name }}", "{{ doc.json.nested.deep.v }}",
    "  {{ doc.json.total }}\n", "{{- doc.json.total -}}", "{{ 42 }}", "{{ 'text' }}", "{{ none }}",
    "order-{{ doc.json.name }}.xml", "{{ doc.json.total }}/{{ process.p }}", "{{ doc.json.items | length }}",
    "{{ doc.json.total * 2 }}", "{{ doc.json.total > 1000 and process.p == '1' }}", "{{ range(3) | list }}",
    "{{ jsonpath(doc.json, '$.items[*].q') }}",
]


@pytest.mark.parametrize("source", PATHS)
def test_same_values_and_text_as_jinja_itself(source: str) -> None:
    d = Document(b'{"total": 1500, "items": [{"q": 1}, {"q": 2}], "name": "Zo\\u00eb", "nested": {"deep": {"v": null}}}',
                 {"tier": "gold"})
    s = scope(d)
    want_text = ENV.from_string(source).render(**s)
    t = compile_template(source)
    assert t.render(s) == want_text
    stripped = source.strip()
    if stripped.startswith("{{") and stripped.endswith("}}") and stripped.count("{{") == 1:
        want = ENV.compile_expression(stripped.strip("{}-").strip(), undefined_to_none=False)(**s)
        assert t.evaluate(s) == want and type(t.evaluate(s)) is type(want)
    else:
        assert t.evaluate(s) == want_text


def test_whitespace_control_and_comments_around_a_sole_expression() -> None:
    t = compile_template("  {{- doc.json.n -}}  ")
    assert t.evaluate(scope(Document(b'{"n": 3}'))) == 3
    assert compile_template("{# the count #} {{ doc.json.n }}").evaluate(scope(Document(b'{"n": 3}'))) == 3
    assert t.render(scope(Document(b'{"n": 3}'))) == "3"


def test_full_templates_read_scope_then_globals() -> None:
    s = scope(Document(b'{"a": 1, "items": [2, 3]}'))
    s["now"] = "fixed"  # a scope name hides the global function of the same name
    t = compile_template(
        "{% macro m(x) %}[{{ x }}{{ doc.json.a }}]{% endmacro %}"
        "{% set ns = namespace(t=0) %}{% for i in doc.json['items'] %}{% set ns.t = ns.t + i %}{{ m(i) }}{% endfor %}"
        "{{ ns.t }} {{ now }} {{ range(2) | list }} {{ uuid() | length }}")
    assert t.render(s) == "[21][31]5 fixed [0, 1] 36"
    assert t.render(s) == "[21][31]5 fixed [0, 1] 36"  # nothing kept from one render to the next
    assert compile_template("{{ now }}").evaluate(s) == "fixed"


def test_templates_are_shared_by_source_and_checked_at_load() -> None:
    a, b = compile_template("{{ doc.json.a + 1 }}"), compile_template("{{ doc.json.a + 1 }}")
    assert a._code is b._code
    with pytest.raises(ExpressionSyntaxError, match="No filter named 'nofilter'"):
        compile_template("{{ doc.json.a | nofilter }}")
    with pytest.raises(ExpressionSyntaxError, match="No test named 'notest'"):
        compile_template("{{ doc is notest }}")
    with pytest.raises(ExpressionSyntaxError, match="loop"):
        compile_template("{% for loop in doc %}{% endfor %}")


@pytest.mark.parametrize("value", [
    {"b": 1, "a": [1, 2.5, None, True, "x"]},
    {1: "int key", "z": {"nested": "v"}},
    "Zoë & co 😀 <tag>",
    Decimal("12.50"),
    dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC),
    2 ** 70,
    [dt.date(2026, 1, 2), {"d": Decimal("1")}],
])
def test_tojson_is_json_with_str_of_other_types(value: Any) -> None:
    want = json.dumps(value, default=str)
    got = tojson(value)
    assert got.isascii()
    assert json.loads(got) == json.loads(want)
    assert list(json.loads(got)) == list(json.loads(want)) if isinstance(value, dict) else True  # key order
    assert json.loads(tojson(value, indent=2)) == json.loads(want)
    assert json.loads(tojson(value, indent=4)) == json.loads(want)
    assert compile_template("{{ v | tojson }}").render({"v": value}) == got


def test_undefined_is_an_error_naming_the_template() -> None:
    with pytest.raises(ExpressionError, match=r"in '\{\{ doc.json.missing \}\}': 'dict object' has no attribute"):
        compile_template("{{ doc.json.missing }}").render(scope(Document(b"{}")))


def test_syntax_error_at_compile_time() -> None:
    with pytest.raises(ExpressionSyntaxError, match="invalid template"):
        compile_template("{{ a + }}")


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<lolz>&lol9;</lolz>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE foo [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<foo>&xxe;</foo>"""


@pytest.mark.parametrize("payload", [BILLION_LAUGHS, XXE])
def test_hostile_xml_is_refused_fast_without_reading_files(payload: bytes) -> None:
    t0 = time.perf_counter()
    with pytest.raises(DocumentError, match="entity declarations are not allowed"):
        Document(payload).xml  # noqa: B018
    assert time.perf_counter() - t0 < 1.0


def test_external_dtd_is_never_fetched() -> None:
    doc = Document(b'<!DOCTYPE foo SYSTEM "http://127.0.0.1:9/never.dtd"><foo>x</foo>')
    assert doc.xml.text == "x"


def test_malformed_xml_and_json_messages() -> None:
    with pytest.raises(DocumentError, match="not well-formed XML"):
        Document(b"<a><b></a>").xml  # noqa: B018
    with pytest.raises(DocumentError, match="not valid JSON"):
        Document(b"{nope").json  # noqa: B018
