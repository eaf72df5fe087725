"""Streamed splits: the same parts as a whole-document split, read piece by piece, handed on in batches."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from click.testing import CliRunner

import atom.document
from atom.cli import main
from atom.document import Document, check_xml, iter_xml_elements
from atom.errors import DocumentError
from atom.shapes.documents import STREAM_BATCH, simple_xpath, stream_batch
from connectors.testing import TestConnector

from .conftest import run


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read inputs 7 bytes at a time, so that every construct straddles a chunk boundary somewhere."""
    monkeypatch.setattr(atom.document, "CHUNK", 7)


def orders(n: int) -> str:
    return "<Orders>\n" + "".join(f'  <Order id="{i}"><Qty>{i % 3}</Qty></Order>\n' for i in range(n)) + "</Orders>\n"


XML_CASES = {
    "plain": orders(5),
    "declaration and comments": ('<?xml version="1.0" encoding="UTF-8"?>\n<!-- head -->\n<Orders>'
                                 "<Order id='1'>a<!-- c --><![CDATA[<x>]]></Order><?pi x?>tail <b>x</b>"
                                 "<Header/><Order id='2'/>  <Order/></Orders>"),
    "nested same tag": "<Orders><Order id='1'><Order id='inner'/></Order><Other><Order id='no'/></Other>"
                       "<Order id='2'>t&amp;&lt;&#233;</Order></Orders>",
    "other root": "<Invoices><Order id='1'/></Invoices>",
    "latin-1": '<?xml version="1.0" encoding="ISO-8859-1"?><Orders><Order n="\xe9t\xe9"/></Orders>',
    "no records": "<Orders/>",
}

NS_CASES = {
    "prefixed": "<o:Orders xmlns:o='urn:o' xmlns:x='urn:x'><o:Order x:a='1'><o:Qty>1</o:Qty></o:Order>"
                "<Order/><o:Order/></o:Orders>",
    "default namespace": "<Orders xmlns='urn:o'><Order id='1'><Qty xmlns:y='urn:y'>2</Qty></Order>"
                         "<Order xmlns:z='urn:z' z:k='v'/></Orders>",
    "prefix redeclared": "<a:Orders xmlns:a='urn:o'><b:Order xmlns:b='urn:o'/><a:Order xmlns:a='urn:other'/>"
                         "</a:Orders>",
}


def _encode(text: str) -> bytes:
    return text.encode("latin-1") if "ISO-8859-1" in text else text.encode()


@pytest.mark.parametrize("name", sorted(XML_CASES))
def test_streamed_xml_elements_equal_the_xpath_result(name: str, small_chunks: None) -> None:
    data = _encode(XML_CASES[name])
    whole = Document(data)
    expected = [atom.document.etree.tostring(e) for e in whole.xml.xpath("/Orders/Order")]
    assert list(iter_xml_elements(Document(data), ("Orders", "Order"))) == expected


@pytest.mark.parametrize("name", sorted(NS_CASES))
def test_streamed_namespaced_elements_equal_the_xpath_result(name: str, small_chunks: None) -> None:
    data = NS_CASES[name].encode()
    ns = {"o": "urn:o"}
    path = simple_xpath("/o:Orders/o:Order", ns)
    assert path == ("{urn:o}Orders", "{urn:o}Order")
    expected = [atom.document.etree.tostring(e) for e in Document(data).xml.xpath("/o:Orders/o:Order", namespaces=ns)]
    assert expected  # every case selects something
    assert list(iter_xml_elements(Document(data), path)) == expected


def test_deeper_paths_and_doctypes_stream_too(small_chunks: None) -> None:
    for data, xp in [(b"<A><B><C i='1'/><C i='2'/>t</B><X><C i='no'/></X><B><C i='3'/></B></A>", "/A/B/C"),
                     (b"<!DOCTYPE Orders><Orders><Order a='1'/>x<Order/></Orders>", "/Orders/Order")]:
        expected = [atom.document.etree.tostring(e) for e in Document(data).xml.xpath(xp)]
        assert len(expected) in (2, 3)
        assert list(iter_xml_elements(Document(data), simple_xpath(xp) or ())) == expected


def test_simple_xpath_recognises_only_plain_child_paths() -> None:
    assert simple_xpath("/Orders/Order") == ("Orders", "Order")
    assert simple_xpath("/a/b.c/d-e_f") == ("a", "b.c", "d-e_f")
    for path in ("//Order", "/Orders", "/Orders/Order[1]", "/Orders/*", "Orders/Order", "/Orders/Order/@id",
                 "/Orders/text()", "/Orders//Order", "/p:Orders/p:Order", "/Orders/Order | /X/Y"):
        assert simple_xpath(path, {}) is None, path


HOSTILE = {
    "billion laughs": '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
                      "<Orders><Order>&lol2;</Order></Orders>",
    "external entity": '<!DOCTYPE Orders [<!ENTITY xxe SYSTEM "http://127.0.0.1:9/secret">]>'
                       "<Orders><Order>&xxe;</Order></Orders>",
    "entity after 4 KB": "<!DOCTYPE Orders>" + "<!-- " + "x" * 5000 + " -->"
                         "<Orders><Order><![CDATA[<!ENTITY x 'y'>]]></Order></Orders>",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_xml_is_refused_as_by_the_whole_document_parser(name: str, small_chunks: None) -> None:
    data = HOSTILE[name].encode()
    with pytest.raises(DocumentError) as whole:
        atom.document.parse_xml(data)
    assert "entity declarations are not allowed" in str(whole.value)
    with pytest.raises(DocumentError) as streamed:
        list(iter_xml_elements(Document(data), ("Orders", "Order")))
    assert str(streamed.value) == str(whole.value)
    with pytest.raises(DocumentError) as checked:
        check_xml(Document(data))
    assert str(checked.value) == str(whole.value)


@pytest.mark.parametrize("data", [b"", b"<Orders><Order></Orders>", b"<Orders><Order/>", b"<a/><b/>",
                                  b"<Orders><Order>\xff</Order></Orders>"])
def test_malformed_xml_gives_the_whole_document_parser_message(data: bytes, small_chunks: None) -> None:
    with pytest.raises(DocumentError) as whole:
        atom.document.parse_xml(data)
    for fn in (lambda: list(iter_xml_elements(Document(data), ("Orders", "Order"))), lambda: check_xml(Document(data))):
        with pytest.raises(DocumentError) as streamed:
            fn()
        assert str(streamed.value) == str(whole.value)


LINES = "a\r\nb\n\n  \nc\rd\x0be\x0cf\x1cg\x85h\u2028i\u2029j\r\n\r\nlast"


def test_streamed_lines_and_csv_equal_the_whole_text_split(deploy, small_chunks: None) -> None:  # type: ignore[no-untyped-def]
    dep = deploy(l="""
        process: l
        shapes:
          - {id: sp, split: {lines: true}}
          - {id: r, return: {}}
        """, h="""
        process: h
        shapes:
          - {id: sp, split: {lines: true, keep_header: true}}
          - {id: r, return: {}}
        """, c="""
        process: c
        shapes:
          - {id: sp, split: {csv: {header: true, delimiter: ";"}}}
          - {id: r, return: {}}
        """, k="""
        process: k
        shapes:
          - {id: sp, split: {csv: {header: true, output: csv}}}
          - {id: r, return: {}}
        """, n="""
        process: n
        shapes:
          - {id: sp, split: {csv: {header: false}}}
          - {id: r, return: {}}
        """)
    lines = [ln for ln in LINES.splitlines() if ln.strip()]
    ex = run(dep, "l", Document(LINES, {"src": "1"}))
    assert [d.text for d in ex.returned] == lines
    assert all(d.props == {"src": "1"} for d in ex.returned)
    ex = run(dep, "h", LINES)
    assert [d.text for d in ex.returned] == [f"a\n{ln}\n" for ln in lines[1:]]

    text = 'sku;qty;note\r\nA;1;"two\nlines"\n\nB;2;"semi;colon"\r\nC;3\n'
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=";") if r]
    ex = run(dep, "c", text)
    assert [d.json for d in ex.returned] == [dict(zip(rows[0], r, strict=False)) for r in rows[1:]]
    ex = run(dep, "n", "x,y\n1,2\n")
    assert [d.json for d in ex.returned] == [["x", "y"], ["1", "2"]]
    ex = run(dep, "k", "x,y\n1,2\n3,4")
    assert [d.text for d in ex.returned] == ["x,y\n1,2\n", "x,y\n3,4\n"]


def test_text_errors_are_located_in_the_whole_document(deploy, small_chunks: None) -> None:  # type: ignore[no-untyped-def]
    dep = deploy(l="""
        process: l
        shapes:
          - {id: sp, split: {lines: true}}
          - {id: r, return: {}}
        """, c="""
        process: c
        shapes:
          - {id: sp, split: {csv: {header: true}}}
          - {id: r, return: {}}
        """)
    bad = b"line one\nline two \xe2\x82 three\n"
    with pytest.raises(UnicodeDecodeError) as exc:
        bad.decode("utf-8")
    ex = run(dep, "l", bad)
    assert ex.status == "ERROR" and ex.returned == []
    assert ex.message == f"split 'sp': document is not UTF-8 text: {exc.value}"
    ex = run(dep, "c", "a,b\n1,2\nx\ry,z\n")
    assert ex.status == "ERROR" and ex.returned == []
    assert ex.message.startswith("split 'sp': CSV line 3: new-line character seen in unquoted field")


ROUTED = """
connection: sink
type: test
"""


def _process(name: str, *shapes: str) -> str:
    body = "\n".join(f"          - {s}" for s in shapes)
    return f"""
        process: {name}
        shapes:
{body}
        """


def test_split_to_a_connector_runs_the_path_in_bounded_batches(deploy) -> None:  # type: ignore[no-untyped-def]
    TestConnector.sent.pop("sink", None)
    dep = deploy(sink=ROUTED, p=_process(
        "p", "{id: sp, split: {xpath: /Orders/Order}}",
        "{id: m, message: {template: \"{{ xpath(doc, '/Order/@id') }}\"}}",
        "{id: k, connector: {connection: sink}}"))
    n = 2 * STREAM_BATCH + 500
    ex = run(dep, "p", Document(orders(n), {"file": "o.xml"}))
    assert ex.status == "COMPLETE"
    assert [d.text for d in TestConnector.sent["sink"]] == [str(i) for i in range(n)]
    assert all(d.props == {"file": "o.xml"} for d in TestConnector.sent["sink"])
    assert ex.shape_stats["sp"].docs_out == n
    assert (ex.shape_stats["k"].runs, ex.shape_stats["k"].docs_in) == (3, n)


def test_malformed_input_fails_before_any_part_goes_on(deploy) -> None:  # type: ignore[no-untyped-def]
    TestConnector.sent.pop("sink", None)
    dep = deploy(sink=ROUTED, p=_process("p", "{id: sp, split: {xpath: /Orders/Order}}",
                                         "{id: k, connector: {connection: sink}}"))
    good = orders(STREAM_BATCH + 10)
    bad = good.replace("</Orders>", "</Order>")
    ex = run(dep, "p", bad)
    assert ex.status == "ERROR"
    assert "sink" not in TestConnector.sent
    with pytest.raises(DocumentError) as whole:
        atom.document.parse_xml(bad)
    assert ex.message == f"split 'sp': {whole.value}"
    ex = run(dep, "p", bad, good)  # the good document still goes on
    assert ex.status == "ERROR" and len(TestConnector.sent["sink"]) == STREAM_BATCH + 10


def test_whole_batch_shapes_after_a_split_see_every_part(deploy) -> None:  # type: ignore[no-untyped-def]
    n = STREAM_BATCH + 1
    dep = deploy(c=_process("c", "{id: sp, split: {xpath: /Orders/Order}}", "{id: c, combine: {xml_root: All}}",
                            "{id: r, return: {}}"),
                 b=_process("b", "{id: sp, split: {lines: true}}", "{id: b, branch: {paths: [one, two]}}",
                            "{id: one, message: {template: 'one {{ doc.text }}'}, next: r}",
                            "{id: two, message: {template: 'two {{ doc.text }}'}}", "{id: r, return: {}}"))
    ex = run(dep, "c", orders(n))
    assert len(ex.returned) == 1 and len(ex.returned[0].xml) == n
    ex = run(dep, "b", "\n".join(str(i) for i in range(n)))
    assert [d.text for d in ex.returned] == [f"one {i}" for i in range(n)] + [f"two {i}" for i in range(n)]


def test_returned_parts_are_all_kept_in_order(deploy) -> None:  # type: ignore[no-untyped-def]
    n = 2 * STREAM_BATCH + 1
    dep = deploy(p=_process("p", "{id: sp, split: {csv: {header: true}}}", "{id: r, return: {}}"))
    ex = run(dep, "p", "n\n" + "\n".join(str(i) for i in range(n)))
    assert [d.json["n"] for d in ex.returned] == [str(i) for i in range(n)]
    assert ex.shape_stats["r"].runs == 3
    assert ex.record()["outboundDocumentCount"] == n


def test_failures_in_later_batches_are_caught_by_an_enclosing_try(deploy) -> None:  # type: ignore[no-untyped-def]
    TestConnector.sent.pop("sink", None)
    dep = deploy(sink=ROUTED, p=_process(
        "p", "{id: t, try_catch: {try: sp, catch: caught}}",
        "{id: sp, split: {lines: true}}",
        "{id: k, connector: {connection: sink, operation: {fail_when: \"{{ doc.text == '1500' }}\"}}, next: end}",
        "{id: caught, notify: {message: \"caught: {{ doc.props.try_catch_message }}\"}}"))
    ex = run(dep, "p", "\n".join(str(i) for i in range(2 * STREAM_BATCH)))
    assert ex.status == "COMPLETE"
    assert len(TestConnector.sent["sink"]) == 2 * STREAM_BATCH - 1
    assert [e.message for e in ex.logs if e.shape == "caught"] == ["caught: connection 'sink': rejected by test connector"]


def test_batch_size_follows_the_rest_of_the_path(deploy) -> None:  # type: ignore[no-untyped-def]
    sp = "{id: sp, split: {lines: true}}"
    cases = {
        "linear": ([sp, "{id: m, message: {template: x}}", "{id: k, connector: {connection: sink}}"], STREAM_BATCH),
        "flow": ([sp, "{id: f, flow_control: {batch: 5, parallel: 3}}", "{id: c, combine: {lines: true}}"], 15),
        "combine": ([sp, "{id: m, map: {input: json, output: json, fields: {a: $.a}}}",
                     "{id: c, combine: {lines: true}}"], 0),
        "batch message": ([sp, "{id: m, message: {template: x, batch: true}}"], 0),
        "branch": ([sp, "{id: b, branch: {paths: [x, y]}}", "{id: x, stop: {}}", "{id: y, stop: {}}"], 0),
        "passthrough": ([sp, "{id: pc, process_call: {process: child}}"], 0),
        "per-document call": ([sp, "{id: pc, process_call: {process: child, passthrough: false}}"], STREAM_BATCH),
        "abort": ([sp, "{id: x, exception: {message: no, scope: execution}}"], 0),
        "return after decision": ([sp, "{id: d, decision: {when: 'true', then: r, else: end}}",
                                   "{id: r, return: {}}"], 0),
        "decision to connectors": ([sp, "{id: d, decision: {when: 'true', then: k, else: end}}",
                                    "{id: k, connector: {connection: sink}}"], STREAM_BATCH),
        "cache get": ([sp, "{id: c, cache: {name: n, action: get, key: k}}"], 0),
    }
    dep = deploy(sink=ROUTED, child=_process("child", "{id: r, return: {}}"),
                 **{f"p{i}": _process(f"p{i}", *shapes) for i, (shapes, _) in enumerate(cases.values())})
    for i, (name, (_, expected)) in enumerate(cases.items()):
        shapes = dep.processes[f"p{i}"].shapes
        assert stream_batch(shapes, shapes["sp"].next) == expected, name


def test_atom_run_reads_a_file_input_as_a_stream(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(_process("p", "{id: sp, split: {xpath: /Orders/Order}}",
                                              "{id: m, message: {template: \"{{ xpath(doc, '/Order/@id') }}\"}}",
                                              "{id: r, return: {}}"))
    src = tmp_path / "orders.xml"
    src.write_text(orders(3))
    res = CliRunner().invoke(main, ["run", str(tmp_path / "p.yaml"), "--input", str(src), "--json-record"])
    assert res.exit_code == 0, res.output
    assert res.stdout == "0\n1\n2\n"
    assert f'"inboundDocumentSize": {src.stat().st_size}' in res.stderr
    res = CliRunner().invoke(main, ["run", str(tmp_path / "p.yaml"), "--input", "-"], input=orders(2))
    assert res.exit_code == 0 and res.stdout == "0\n1\n"
    res = CliRunner().invoke(main, ["run", str(tmp_path / "p.yaml"), "--input", str(tmp_path / "missing.xml")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_a_file_document_is_read_only_when_needed(tmp_path: Path, deploy) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "in.txt"
    src.write_bytes(b"x\ny\n")
    doc = Document.from_file(src, {"k": "v"})
    dep = deploy(p=_process("p", "{id: sp, split: {lines: true}}", "{id: r, return: {}}"))
    ex = run(dep, "p", doc)
    assert [d.text for d in ex.returned] == ["x", "y"]
    assert doc.size == 4 and doc._data is None  # streamed: never held whole
    assert doc.copy().text == "x\ny\n" and doc.data == b"x\ny\n"


def test_views_of_consumed_documents_are_dropped(deploy) -> None:  # type: ignore[no-untyped-def]
    dep = deploy(p=_process("p", "{id: n, notify: {message: \"{{ doc.xml.tag }}\"}}",
                            "{id: m, message: {template: \"{{ doc.xml.get('id') }}\"}}", "{id: r, return: {}}"))
    doc = Document("<a id='7'/>")
    ex = run(dep, "p", doc)
    assert [d.text for d in ex.returned] == ["7"]
    assert doc._xml is None  # the message derived a new document: the tree is not kept
    assert doc.xml.get("id") == "7"  # and is parsed again if asked for
