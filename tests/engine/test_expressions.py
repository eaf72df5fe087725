"""The expression sandbox, JSONPath/XPath helpers and hostile XML."""

from __future__ import annotations

import time

import pytest

from atom.document import Document
from atom.errors import DocumentError
from atom.expressions import ExpressionError, ExpressionSyntaxError, compile_template, jsonpath, xpath


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
