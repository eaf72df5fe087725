"""The map engine: every format both ways, repeating groups, functions, defaults, templates, properties."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
from lxml import etree

from atom.document import Document
from atom.errors import DocumentError
from atom.maps import MAP_SPEC, CompiledMap, LocalMapContext, compile_map
from atom.spec import CheckContext, Field, Spec, Str
from atom.yamlio import Where, load_yaml

COMPONENT = Spec([Field("map", Str(), required=True), *MAP_SPEC.fields])


def _compile(text: str, file: str, name: str) -> tuple[CompiledMap | None, CheckContext]:
    """Check and compile a map body, or a map component (with `map: name`) the way the loader does."""
    node, probs = load_yaml(textwrap.dedent(text), file)
    assert not probs, probs
    ctx = CheckContext()
    where = Where(file, node)
    values = (COMPONENT if "map" in node else MAP_SPEC).check(node, where, ctx)
    values.pop("map", None)
    return compile_map(values, where, ctx, name), ctx


def problems(text: str, file: str = "m.yaml") -> list[str]:
    """Load-time problems, as `file:line:col: error: message` strings, in file order (as the loader sorts them)."""
    found = _compile(text, file, "m")[1].problems
    return [str(p) for p in sorted(found, key=lambda p: (p.location.line, p.location.col))]


def build(text: str, name: str = "m") -> CompiledMap:
    m, ctx = _compile(text, f"{name}.yaml", name)
    assert not ctx.problems, [str(p) for p in ctx.problems]
    assert m is not None
    return m


def run(m: CompiledMap, data: Any, props: dict[str, str] | None = None,
        ctx: LocalMapContext | None = None) -> Document:
    if isinstance(data, (dict, list)):
        data = json.dumps(data)
    return m.apply(Document(data, dict(props or {})), ctx or LocalMapContext())


def jrun(m: CompiledMap, data: Any, **kw: Any) -> Any:
    return json.loads(run(m, data, **kw).data)


ORDER = {
    "id": "SO-1", "customer": {"name": "Ann", "email": None},
    "items": [{"sku": "ab-1", "qty": 2, "price": 9.5}, {"sku": "cd-2", "qty": 1, "price": 20}],
    "total": 39,
}

ORDER_TO_XML = """
    map: order-to-xml
    input: json
    output: xml
    root: Order
    fields:
      "@id": $.id
      Customer/Name: $.customer.name
      Customer/Email: {source: $.customer.email, default: unknown@example.com}
      Lines/Line:
        foreach: $.items[*]
        fields:
          "@no": "{{ index + 1 }}"
          Sku: {source: $.sku, function: upper}
          Qty: $.qty
          Price: $.price
      Total: $.total
    """

XML_TO_ORDER = """
    input: xml
    output: json
    fields:
      id: "@id"
      customer/name: Customer/Name
      items:
        foreach: Lines/Line
        fields:
          no: {source: "@no", type: int}
          sku: {source: Sku, function: lower}
          qty: {source: Qty, type: int}
          price: {source: Price, type: number}
      total: {source: Total, type: number}
    """


# ------------------------------------------------------------------------------------------- formats


def test_json_to_xml_and_back() -> None:
    to_xml = build(ORDER_TO_XML, "order-to-xml")
    assert (to_xml.name, to_xml.input, to_xml.output, to_xml.content_type) == \
        ("order-to-xml", "json", "xml", "application/xml")
    doc = run(to_xml, ORDER, props={"trace": "1"})
    assert doc.props == {"trace": "1"}
    assert doc.data == (
        b"<?xml version='1.0' encoding='UTF-8'?>\n<Order id=\"SO-1\"><Customer><Name>Ann</Name>"
        b"<Email>unknown@example.com</Email></Customer><Lines><Line no=\"1\"><Sku>AB-1</Sku><Qty>2</Qty>"
        b"<Price>9.5</Price></Line><Line no=\"2\"><Sku>CD-2</Sku><Qty>1</Qty><Price>20</Price></Line></Lines>"
        b"<Total>39</Total></Order>")
    back = build(XML_TO_ORDER)
    assert back.content_type == "application/json"
    out = back.apply(doc, LocalMapContext())
    assert out.json == json.loads(out.data) == {
        "id": "SO-1", "customer": {"name": "Ann"},
        "items": [{"no": 1, "sku": "ab-1", "qty": 2, "price": 9.5}, {"no": 2, "sku": "cd-2", "qty": 1, "price": 20}],
        "total": 39}


def test_csv_to_json_rows_and_types() -> None:
    m = build("""
        input: csv
        output: json
        fields:
          source: "{{ process.feed }}"
          orders:
            foreach: rows
            fields:
              id: id
              qty: {source: qty, type: int}
              city: {source: 3, function: title}
        """)
    data = 'id,qty,city\nA1,2,paris\n\n"B,2",10,"new york"\n'
    assert jrun(m, data, ctx=LocalMapContext({"feed": "ftp"})) == {
        "source": "ftp",
        "orders": [{"id": "A1", "qty": 2, "city": "Paris"}, {"id": "B,2", "qty": 10, "city": "New York"}]}


def test_csv_without_header_and_map_level_foreach_gives_an_array() -> None:
    m = build("""
        input: {format: csv, delimiter: ";", header: false, columns: [sku, qty]}
        output: json
        foreach: rows
        fields:
          sku: sku
          qty: {source: 2, type: int}
        """)
    assert jrun(m, "a;1\nb;2\n") == [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]
    anonymous = build("""
        input: {format: csv, header: false}
        output: json
        foreach: rows
        fields: {first: {source: 1}, second: "2"}
        """)
    assert jrun(anonymous, "x,y\nz\n") == [{"first": "x", "second": "y"}, {"first": "z"}]


def test_json_to_csv() -> None:
    m = build("""
        input: json
        output: csv
        foreach: $.items[*]
        fields:
          sku: $.sku
          qty: $.qty
          note: {value: "say \\"hi\\", ok"}
          order: "{{ doc.json.id }}"
        """)
    assert m.content_type == "text/csv"
    assert run(m, ORDER).text == 'sku,qty,note,order\nab-1,2,"say ""hi"", ok",SO-1\ncd-2,1,"say ""hi"", ok",SO-1\n'
    declared = build("""
        output: {format: csv, columns: [qty, sku, extra], line_ending: crlf, delimiter: "|"}
        foreach: $.items[*]
        fields: {sku: $.sku, qty: $.qty}
        """)
    assert run(declared, ORDER).data == b"qty|sku|extra\r\n2|ab-1|\r\n1|cd-2|\r\n"
    one_row = build("""
        output: {format: csv, header: false}
        fields: {id: $.id, n: "{{ doc.json['items'] | length }}"}
        """)
    assert run(one_row, ORDER).text == "SO-1,2\n"


def test_flat_delimited_in_and_out() -> None:
    m = build("""
        input: {format: flat, delimiter: "|", header: true}
        output: {format: flat, delimiter: "*", header: true}
        foreach: rows
        fields:
          ID: id
          NAME: {source: name, function: upper}
        """)
    assert m.content_type == "text/plain"
    assert run(m, "id|name\n1|ann\n2|bob\n").text == "ID*NAME\n1*ANN\n2*BOB\n"
    with pytest.raises(DocumentError, match=r"map 'm': output: record 1: field 'NAME': value 'A\*B' contains the delimiter"):
        run(m, "id|name\n1|a*b\n")


def test_flat_positional_in_and_out() -> None:
    m = build("""
        input:
          format: flat
          columns: [{name: id, width: 4}, {name: name, width: 6}, {name: amount, width: 5}]
        output:
          format: flat
          columns:
            - {name: amount, width: 8, align: right, pad: "0"}
            - {name: name, width: 4, truncate: true}
            - {name: id, width: 4}
        foreach: rows
        fields:
          id: id
          name: name
          amount: {source: amount, function: {multiply: 100}, type: int}
        """)
    # the third line is short: its amount is missing, and an empty value is all padding
    assert run(m, "0001Ann    12.5\n0002Bobby  3.25\n0003Cy\n").text == \
        "00001250Ann 0001\n00000325Bobb0002\n00000000Cy  0003\n"
    too_long = build("""
        input: json
        output: {format: flat, columns: [{name: code, width: 3}]}
        fields: {code: $.id}
        """)
    with pytest.raises(DocumentError, match=r"field 'code': value 'SO-12' is longer than the column width 3"):
        run(too_long, {"id": "SO-12"})


def test_xml_to_xml_with_namespaces() -> None:
    m = build("""
        input: xml
        output: xml
        namespaces: {o: "urn:orders", e: "urn:erp", x: "urn:ext"}
        namespace: "urn:erp:default"
        root: e:Document
        fields:
          e:Header/e:Ref: o:Header/o:Id
          e:Header/@x:origin: "@o:source"
          Body/Item:
            foreach: o:Lines/o:Line
            fields:
              "@code": o:Sku
              .: o:Name
          Count: count(o:Lines/o:Line)
        """)
    src = (b'<o:Order xmlns:o="urn:orders" o:source="web"><o:Header><o:Id>7</o:Id></o:Header>'
           b'<o:Lines><o:Line><o:Sku>A</o:Sku><o:Name>Apple</o:Name></o:Line>'
           b'<o:Line><o:Sku>B</o:Sku><o:Name>Pear</o:Name></o:Line></o:Lines></o:Order>')
    out = m.apply(Document(src), LocalMapContext())
    root = etree.fromstring(out.data)
    assert root.tag == "{urn:erp}Document"
    assert root.nsmap == {"e": "urn:erp", "x": "urn:ext", None: "urn:erp:default"}
    ns = {"e": "urn:erp", "d": "urn:erp:default", "x": "urn:ext"}
    assert root.findtext("e:Header/e:Ref", namespaces=ns) == "7"
    header = root.find("e:Header", ns)
    assert header is not None and header.get("{urn:ext}origin") == "web"
    items = root.findall("d:Body/d:Item", ns)
    assert [(i.get("code"), i.text) for i in items] == [("A", "Apple"), ("B", "Pear")]
    assert root.findtext("d:Count", namespaces=ns) == "2"
    # the declarations sit on the root only
    assert out.data.count(b"xmlns") == 3


def test_xml_output_options_and_subtrees() -> None:
    m = build("""
        output: {format: xml, pretty: true, declaration: false}
        root: Export
        fields:
          Meta: $.meta
          Tags: $.tags
          Flag: $.flag
          Empty: {source: $.missing, keep_null: true}
        """)
    out = run(m, {"meta": {"a": 1, "b": {"c": "x"}}, "tags": ["t1", "t2"], "flag": True})
    assert out.text == ("<Export>\n  <Meta>\n    <a>1</a>\n    <b>\n      <c>x</c>\n    </b>\n  </Meta>\n"
                        "  <Tags>t1</Tags>\n  <Tags>t2</Tags>\n  <Flag>true</Flag>\n  <Empty/>\n</Export>\n")


def test_json_to_json_pretty_subtree_copy_and_nulls() -> None:
    m = build("""
        output: {format: json, pretty: true}
        fields:
          customer: $.customer
          first_sku: $.items[0].sku
          skus: $.items[*].sku
          nothing: {source: $.nope, keep_null: true}
          "@type": {value: order}
        """)
    out = run(m, ORDER)
    assert out.text.startswith('{\n  "customer"')
    assert out.json == {"customer": {"name": "Ann", "email": None}, "first_sku": "ab-1", "skus": ["ab-1", "cd-2"],
                        "nothing": None, "@type": "order"}


# ------------------------------------------------------------------------------------ repeating groups


def test_nested_repeating_groups_both_ways() -> None:
    to_xml = build("""
        output: xml
        root: Orders
        fields:
          Order:
            foreach: $.orders[*]
            fields:
              "@id": $.id
              Line:
                foreach: $.lines
                fields:
                  "@order": "{{ doc.json.orders[0].id if index == 0 else '' }}"
                  Sku: $.sku
              Tag:
                foreach: $.tags[*]
        """)
    data = {"orders": [{"id": "1", "lines": [{"sku": "a"}, {"sku": "b"}], "tags": ["x", "y"]},
                       {"id": "2", "lines": {"sku": "c"}, "tags": []}, {"id": "3"}]}
    xml = run(to_xml, data)
    assert xml.data.endswith(
        b'<Orders><Order id="1"><Line order="1"><Sku>a</Sku></Line><Line order=""><Sku>b</Sku></Line>'
        b'<Tag>x</Tag><Tag>y</Tag></Order><Order id="2"><Line order="1"><Sku>c</Sku></Line></Order>'
        b'<Order id="3"/></Orders>')
    to_json = build("""
        input: xml
        fields:
          orders:
            foreach: Order
            fields:
              id: "@id"
              lines:
                foreach: Line
                fields: {sku: Sku}
              tags: {foreach: Tag}
        """)
    assert to_json.apply(xml, LocalMapContext()).json == {"orders": [
        {"id": "1", "lines": [{"sku": "a"}, {"sku": "b"}], "tags": ["x", "y"]},
        {"id": "2", "lines": [{"sku": "c"}], "tags": []},
        {"id": "3", "lines": [], "tags": []}]}


def test_group_with_its_own_source_and_when_filters() -> None:
    m = build("""
        fields:
          buyer:
            source: $.customer
            fields:
              name: $.name
              greeting: "Hello {{ item.name }}"
          absent: {source: $.nope, fields: {x: $.x}}
          big:
            foreach: $.items[*]
            when: "{{ item.qty > 1 }}"
            fields: {sku: $.sku}
          cheap: {when: "{{ doc.json.total < 10 }}", fields: {flag: {value: true}}}
          label: {value: "many", when: "{{ doc.json['items'] | length > 1 }}"}
        """)
    assert jrun(m, ORDER) == {"buyer": {"name": "Ann", "greeting": "Hello Ann"}, "big": [{"sku": "ab-1"}],
                              "label": "many"}


def test_plain_nested_fields_merge_with_path_targets() -> None:
    m = build("""
        output: xml
        root: R
        fields:
          A/B: $.b
          A:
            fields:
              C: $.c
              "@k": $.k
          A/D/E: $.e
          Amount: $.amount
          Amount/@currency: $.cur
        """)
    out = run(m, {"b": 1, "c": 2, "k": "v", "e": 3, "amount": "9.90", "cur": "EUR"})
    assert out.data.endswith(b'<R><A k="v"><B>1</B><C>2</C><D><E>3</E></D></A>'
                             b'<Amount currency="EUR">9.90</Amount></R>')
    empty = run(m, {})
    assert empty.data.endswith(b"<R/>")


def test_records_from_xml_to_csv() -> None:
    m = build("""
        input: xml
        output: csv
        foreach: /Order/Lines/Line
        fields:
          order: /Order/@id
          sku: Sku
          qty: Qty
        """)
    xml = run(build(ORDER_TO_XML), ORDER)
    assert m.apply(xml, LocalMapContext()).text == "order,sku,qty\nSO-1,AB-1,2\nSO-1,CD-2,1\n"


# ------------------------------------------------------------------------------------------ functions


def fn(functions: str, value: Any, source: str = "$.v", **kw: Any) -> Any:
    m = build(f"""
        fields:
          out: {{source: "{source}", functions: {functions}}}
        """)
    return jrun(m, {"v": value}, **kw).get("out")


def test_string_functions() -> None:
    assert fn("[trim, upper]", "  ab c ") == "AB C"
    assert fn("[ltrim]", "  x ") == "x " and fn("[rtrim]", "  x ") == "  x"
    assert fn("[lower]", "AbC") == "abc" and fn("[title]", "new york") == "New York"
    assert fn("[{substring: [1, 3]}]", "abcdef") == "bcd"
    assert fn("[{substring: -2}]", "abcdef") == "ef"
    assert fn("[{truncate: 2}]", "abcdef") == "ab"
    assert fn("[{replace: [-, '']}]", "a-b-c") == "abc"
    assert fn(r"[{regex_replace: ['(\d+)-(\d+)', '\2/\1']}]", "12-34") == "34/12"
    assert fn(r"[{regex_extract: ['ID(\d+)', 1]}]", "xID42y") == "42"
    assert fn(r"[{regex_extract: '\d+'}]", "none") is None
    assert fn("[{pad_left: [6, '0']}]", 42) == "000042"
    assert fn("[{pad_right: {width: 4, fill: '.'}}]", "ab") == "ab.."
    assert fn("[{prepend: 'ID-'}, {append: '!'}]", 7) == "ID-7!"
    assert fn("[{split: [',', 1]}]", "a,b,c") == "b"
    assert fn("[{split: ','}, {join: ' + '}]", "a,b") == "a + b"
    assert fn("[length]", "abcd") == 4
    assert fn("[{prepend: '{{ process.p }}:'}]", "x", ctx=LocalMapContext({"p": "P"})) == "P:x"
    assert fn("[upper]", None) is None


def test_numeric_functions() -> None:
    assert fn("[{add: 1.1}]", 2.2) == 3.3
    assert fn("[{subtract: 0.1}]", "0.3") == 0.2
    assert fn("[{multiply: 3}]", "1.25") == 3.75
    assert fn("[{divide: 4}]", 10) == 2.5
    assert fn("[{round: 2}]", "2.675") == 2.68
    assert fn("[round]", 2.5) == 3
    assert fn("[floor]", -1.5) == -2 and fn("[ceil]", 1.2) == 2
    assert fn("[abs]", -3) == 3 and fn("[negate]", 3) == -3
    assert fn("[{format_number: ',.2f'}]", 1234.5) == "1,234.50"
    assert fn("[{format_number: '05d'}]", "42") == "00042"
    assert fn("[sum]", None, source="$.items[*].price") == 0
    m = build("""
        fields:
          total: {source: "$.items[*].price", function: sum}
          count: {source: "$.items[*]", function: count}
          lo: {source: "$.items[*].price", function: min}
          hi: {source: "$.items[*].price", function: max}
          avg: {source: "$.items[*].price", functions: [average, {round: 1}]}
          scaled: {source: $.total, function: {multiply: "{{ process.rate }}"}}
        """)
    assert jrun(m, ORDER, ctx=LocalMapContext({"rate": "0.5"})) == \
        {"total": 29.5, "count": 2, "lo": 9.5, "hi": 20, "avg": 14.8, "scaled": 19.5}
    with pytest.raises(DocumentError, match=r"map 'm': field 'out': 'abc' is not a number"):
        fn("[{add: 1}]", "abc")
    with pytest.raises(DocumentError, match=r"field 'out': divide: cannot compute 1 divided by 0"):
        fn("[{divide: 0}]", 1)
    with pytest.raises(DocumentError, match=r"function 'multiply': argument 'number': expected a number, got 'x'"):
        fn("[{multiply: '{{ process.rate }}'}]", 1, ctx=LocalMapContext({"rate": "x"}))


def test_date_functions() -> None:
    assert fn("[{date_format: {from: yyyyMMdd, to: dd/MM/yyyy}}]", "20261122") == "22/11/2026"
    assert fn("[{date_format: '%d %b %Y'}]", "2026-11-22T10:30:00") == "22 Nov 2026"
    assert fn("[{date_format: {to: \"yyyy-MM-dd'T'HH:mm:ss.SSSXXX\", timezone: Europe/Paris}}]",
              "2026-07-01T10:00:00.250Z") == "2026-07-01T12:00:00.250+02:00"
    assert fn("[{date_parse: 'dd.MM.yy'}, {date_add: {days: 10}}, {date_format: iso}]", "25.12.26") == \
        "2027-01-04T00:00:00"
    assert fn("[{date_parse: {format: 'yyyy-MM-dd HH:mm', timezone: UTC}}]", "2026-01-02 03:04") == \
        "2026-01-02T03:04:00+00:00"
    assert fn("[{date_add: {hours: -1.5}}]", "2026-01-01T00:00:00") == "2025-12-31T22:30:00"
    assert fn("[{date_format: EEE}]", "2026-11-22") == "Sun"
    now = fn("[now, {date_format: yyyy}]", None)
    assert len(now) == 4 and now.startswith("20")
    assert fn("[{date_format: dd/MM/yyyy}]", "") is None
    with pytest.raises(DocumentError, match=r"field 'out': '2026/01/01' does not match the date pattern 'yyyyMMdd'"):
        fn("[{date_format: {from: yyyyMMdd, to: iso}}]", "2026/01/01")


def test_lookup_tables() -> None:
    m = build("""
        lookups:
          country: {FR: France, DE: Germany, 1: One}
          carrier:
            UPS: {name: United Parcel, days: 2}
            DHL: {name: DHL Express, days: 1}
        fields:
          country: {source: $.c, function: {lookup: country}}
          numeric: {source: $.n, function: {lookup: country}}
          fallback: {source: $.x, function: {lookup: {table: country, default: Unknown}}}
          missing: {source: $.x, function: {lookup: country}}
          carrier: {source: $.s, function: {lookup: {table: carrier, column: name}}}
          days: {source: $.s, function: {lookup: {table: carrier, column: days}}}
          inline: {source: $.c, function: {lookup: {values: {FR: EUR, US: USD}}}}
        """)
    assert jrun(m, {"c": "FR", "n": 1, "x": "ZZ", "s": "DHL"}) == {
        "country": "France", "numeric": "One", "fallback": "Unknown", "carrier": "DHL Express", "days": 1,
        "inline": "EUR"}
    strict = build("""
        lookups: {country: {FR: France}}
        fields:
          country: {source: $.c, function: {lookup: {table: country, strict: true}}}
        """)
    with pytest.raises(DocumentError, match=r"map 'm': field 'country': no entry 'XX' in lookup table 'country'"):
        jrun(strict, {"c": "XX"})


def test_property_functions_and_properties_block() -> None:
    m = build("""
        properties:
          process: {order_id: $.id, lines: "{{ doc.json['items'] | length }}"}
          document: {file_name: "order-{{ doc.json.id }}.json"}
        fields:
          id: {source: $.id, function: {set_property: last_id}}
          region: {function: {get_property: region}}
          fallback: {function: {get_property: {name: nope, default: none}}}
          channel: {function: {get_document_property: channel}}
          total: {source: $.total, function: {set_document_property: total}}
          seen: "{{ process.order_id }}/{{ process.lines }}"
        """)
    ctx = LocalMapContext({"region": "eu"})
    out = run(m, ORDER, props={"channel": "web"}, ctx=ctx)
    assert out.json == {"id": "SO-1", "region": "eu", "fallback": "none", "channel": "web", "total": 39,
                        "seen": "SO-1/2"}
    assert ctx.properties == {"region": "eu", "order_id": "SO-1", "lines": "2", "last_id": "SO-1"}
    assert out.props == {"channel": "web", "file_name": "order-SO-1.json", "total": "39"}


def test_template_function_and_values() -> None:
    m = build("""
        fields:
          a: {source: $.v, function: {template: "{{ value * 2 }}"}}
          b: {source: $.s, functions: [trim, {template: "{{ value | replace('-', '') }}"}]}
          c: "{{ doc.json.v + 1 }}"
          d: {value: "{{ execution.id }}-{{ env.ATOM_MAPS_TEST_ENV }}"}
          e: 3
          f: false
          g: {value: {nested: [1, 2]}}
        """)
    import os

    os.environ["ATOM_MAPS_TEST_ENV"] = "set"
    try:
        assert jrun(m, {"v": 4, "s": " a-b "}) == {"a": 8, "b": "ab", "c": 5, "d": "local-set", "e": 3, "f": False,
                                                 "g": {"nested": [1, 2]}}
    finally:
        del os.environ["ATOM_MAPS_TEST_ENV"]


# ----------------------------------------------------------------------------------- defaults, types


def test_defaults_on_null_blank_and_missing() -> None:
    m = build("""
        fields:
          a: {source: $.null, default: A}
          b: {source: $.blank, default: B}
          c: {source: $.missing, default: C}
          d: {source: $.set, default: D}
          e: {source: $.spaces, default: "{{ process.fallback }}"}
          f: {source: $.empty_list, default: 0, type: int}
          g: {source: $.zero, default: 5}
        """)
    assert jrun(m, {"null": None, "blank": "", "set": "x", "spaces": "  ", "empty_list": [], "zero": 0},
                ctx=LocalMapContext({"fallback": "E"})) == \
        {"a": "A", "b": "B", "c": "C", "d": "x", "e": "E", "f": 0, "g": 0}
    xml = build("""
        input: xml
        fields:
          a: {source: A, default: dA}
          b: {source: B, default: dB}
          c: {source: C, default: dC}
        """)
    assert xml.apply(Document(b"<r><A/><B>  </B></r>"), LocalMapContext()).json == \
        {"a": "dA", "b": "dB", "c": "dC"}


def test_output_types() -> None:
    m = build("""
        input: xml
        fields:
          i: {source: I, type: int}
          f: {source: F, type: float}
          n1: {source: N1, type: number}
          n2: {source: N2, type: number}
          yes: {source: B1, type: bool}
          no: {source: B2, type: bool}
          s: {source: count(*), type: string}
          blank: {source: Blank, type: int}
        """)
    out = m.apply(Document(b"<r><I> 7 </I><F>2</F><N1>3</N1><N2>-1.5e2</N2><B1>Yes</B1><B2>0</B2><Blank/></r>"),
                  LocalMapContext())
    assert out.json == {"i": 7, "f": 2.0, "n1": 3, "n2": -150.0, "yes": True, "no": False, "s": "7"}
    with pytest.raises(DocumentError, match=r"map 'm': field 'i': cannot convert 'x' to int"):
        m.apply(Document(b"<r><I>x</I></r>"), LocalMapContext())
    with pytest.raises(DocumentError, match=r"field 'yes': cannot convert 'maybe' to bool"):
        m.apply(Document(b"<r><B1>maybe</B1></r>"), LocalMapContext())
    with pytest.raises(DocumentError, match=r"field 'i': cannot convert '1.5' to int: it has a fraction"):
        m.apply(Document(b"<r><I>1.5</I></r>"), LocalMapContext())


def test_required_values_name_the_item() -> None:
    m = build("""
        output: xml
        root: R
        fields:
          Lines/Line:
            foreach: $.items[*]
            fields:
              Sku: {source: $.sku, required: true}
        """)
    with pytest.raises(DocumentError, match=r"^map 'm': field 'Lines/Line\[2\]/Sku': required value is missing "
                                            r"\(source '\$.sku'\)$"):
        run(m, {"items": [{"sku": "a"}, {"sku": " "}]})
    rec = build("""
        output: csv
        foreach: $.items[*]
        fields: {sku: {source: $.sku, required: true}}
        """)
    with pytest.raises(DocumentError, match=r"^map 'm': record 3: field 'sku': required value is missing"):
        run(rec, {"items": [{"sku": "a"}, {"sku": "b"}, {}]})


def test_input_is_not_changed_and_map_is_reusable() -> None:
    m = build(ORDER_TO_XML)
    doc = Document(json.dumps(ORDER), {"k": "v"})
    before = json.dumps(doc.json)
    a, b = m.apply(doc, LocalMapContext()), m.apply(doc, LocalMapContext())
    assert a.data == b.data and json.dumps(doc.json) == before and doc.props == {"k": "v"}
    a.props["new"] = "x"
    assert "new" not in doc.props
