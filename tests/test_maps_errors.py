"""Map errors: load-time problems with their exact locations (all reported at once), and run-time
failures of one document with messages naming the map and the field."""

from __future__ import annotations

import pytest

from atom.document import Document
from atom.errors import DocumentError
from atom.maps import LocalMapContext

from .test_maps import build, problems


def test_every_load_problem_is_reported_at_its_place() -> None:
    got = problems("""
        map: bad
        input: json
        output: xml
        fields:
          A: $.a[
          B: {source: $.b, function: trimm}
          C: {source: $.c, defualt: 1}
          D: customer.name
          E: {source: $.e, functions: [{pad_left: [1, 2, 3]}, {date_format: yyyyQQ}, {lookup: nope}]}
          F: {source: $.f, type: integer}
          G: "{{ doc.json.x "
          "1bad": $.x
          o:Bad: $.x
          H: {foreach: "$.items[*]", fields: {X: "$..[", Y: {source: $.y, function: {round: x}}}}
        """, file="maps/bad.yaml")
    assert got == [
        "maps/bad.yaml:2:1: error: missing required field 'root' (the output is xml)",
        "maps/bad.yaml:6:6: error: invalid JSONPath '$.a[': Parse error near the end of string!",
        "maps/bad.yaml:7:30: error: unknown function 'trimm' (did you mean 'trim'?)",
        "maps/bad.yaml:8:20: error: unknown field 'defualt' (did you mean 'default'?)",
        "maps/bad.yaml:9:6: error: 'customer.name' is not a JSONPath: JSON sources start with '$' "
        "(write '$.customer.name'); use {value: ...} for a constant",
        "maps/bad.yaml:10:32: error: function 'pad_left' takes 1 to 2 arguments, got 3 (width, fill?)",
        "maps/bad.yaml:10:55: error: function 'date_format': argument 'to': unknown letter 'Q' in date pattern "
        "'yyyyQQ' (quote literal text: 'T')",
        "maps/bad.yaml:10:78: error: function 'lookup': argument 'table': unknown lookup table 'nope' "
        "(the map declares no lookups)",
        "maps/bad.yaml:11:26: error: 'integer' is not one of string, int, float, number, bool (did you mean 'int'?)",
        "maps/bad.yaml:12:6: error: invalid template '{{ doc.json.x ': unexpected end of template, "
        "expected 'end of print statement'.",
        "maps/bad.yaml:13:3: error: '1bad' is not a valid XML name",
        "maps/bad.yaml:14:3: error: unknown namespace prefix 'o' in 'o:Bad' (declare it under namespaces)",
        "maps/bad.yaml:15:42: error: invalid JSONPath '$..[': Parse error near the end of string!",
        "maps/bad.yaml:15:77: error: function 'round': argument 'digits': expected an integer, got 'x'",
    ]


def test_xml_source_problems() -> None:
    got = problems("""
        input: xml
        output: json
        namespaces: {o: "urn:o"}
        fields:
          a: "Customer[name"
          b: "p:Name"
          c: $.x
          d: {foreach: $.items, fields: {}}
          e: {source: A, value: 1}
          f: {source: A, function: {regex_replace: "(["}}
          g: {source: A, when: yes}
          h: "concat($missing, o:A)"
        """)
    assert got == [
        "m.yaml:6:6: error: invalid XPath 'Customer[name': Invalid predicate",
        "m.yaml:7:6: error: unknown namespace prefix 'p' in XPath 'p:Name' (declare it under namespaces)",
        "m.yaml:8:6: error: '$.x' is a JSONPath but the input is xml: use an XPath such as 'Customer/Name', "
        "'@id' or '/Order/Id'",
        "m.yaml:9:16: error: '$.items' is a JSONPath but the input is xml: use an XPath such as 'Lines/Line'",
        "m.yaml:10:18: error: give either 'source' or 'value', not both",
        "m.yaml:11:28: error: function 'regex_replace': argument 'pattern': invalid regular expression '([': "
        "unterminated character set at position 1",
        "m.yaml:12:24: error: expected a condition template like \"{{ item.qty > 0 }}\" or true/false, got 'yes'",
        "m.yaml:13:6: error: invalid XPath 'concat($missing, o:A)': Undefined variable",
    ]


def test_columns_formats_and_structure_problems() -> None:
    assert problems("""
        input: {format: csv, columns: [id, qty]}
        output: {format: csv, columns: [id]}
        foreach: rows
        fields:
          id: idd
          qty: {source: 5}
          other: {source: 1}
        """) == [
        "m.yaml:6:7: error: unknown column 'idd' (did you mean 'id'?) (columns: id, qty)",
        "m.yaml:7:17: error: column 5 does not exist (the input has 2 columns)",
        "m.yaml:8:3: error: 'other' is not a declared output column (columns: id)",
    ]
    assert problems("""
        input: csv
        fields:
          id: id
          x: {foreach: rows, fields: {a: a, b: {foreach: rows}}}
        """) == [
        "m.yaml:4:7: error: column 'id' is read per row: put it under a group with 'foreach: rows' "
        "(or use a map-level 'foreach: rows')",
        "m.yaml:5:50: error: 'rows' is the top level of the input: a group inside a row cannot use it",
    ]
    assert problems("""
        input: flat
        output: {format: csv, pretty: true}
        fields: {a: b}
        """) == [
        "m.yaml:2:8: error: a flat file is delimited (give 'delimiter') or positional (give 'columns', each "
        "with a 'width')",
        "m.yaml:3:23: error: unknown field 'pretty'",
    ]
    assert problems("""
        input: jsn
        output: {format: flat, delimiter: ",", columns: [{name: a, width: 3}]}
        fields: {a: $.a}
        """) == [
        "m.yaml:2:8: error: 'jsn' is not one of json, xml, csv, flat, x12 (did you mean 'json'?)",
        "m.yaml:3:49: error: column widths are for positional files; this file has a delimiter",
    ]
    assert problems("""
        output: csv
        root: Nope
        fields:
          a/b: $.a
          g: {foreach: "$.x[*]", fields: {y: $.y}}
        """) == [
        "m.yaml:3:1: error: 'root' is only for xml output (the output is csv)",
        "m.yaml:5:3: error: csv output is flat: target 'a/b' must be a column name",
        "m.yaml:6:3: error: csv output is flat: 'g' cannot be a group (use a map-level foreach for one row per item)",
    ]
    assert problems("fields: []\n") == ["m.yaml:1:9: error: expected a mapping for fields, got a list"]
    assert problems("input: json\n") == ["m.yaml:1:1: error: missing required field 'fields'"]


def test_target_and_rule_problems() -> None:
    got = problems("""
        fields:
          a/b: $.x
          a: {fields: {b: $.y}}
          c: $.c
          c/d: $.d
          l: {foreach: "$.l[*]", fields: {x: $.x}, default: 1}
          m: {fields: {x: $.x}, type: int}
          o: null
          q: {function: {get_property: [a, b, c]}}
          r: {source: $.r, function: {pad_left: {widht: 3}}}
          s: {source: $.s, function: {trim: 1, upper: 2}}
          t: {source: $.t, required: "yes"}
          u: {source: $.u, function: {date_format: {to: iso, timezone: Mars/Base}}}
          v: {source: $.v, function: {lookup: {column: x}}}
          w: {source: $.v, function: {format_number: "zz"}}
          "y/": $.y
          .: $.z
        properties:
          process: {a: {foreach: $.x, fields: {}}}
          doc: {}
        """)
    assert sorted(got, key=lambda p: [int(x) for x in p.split(":")[1:3]]) == [
        "m.yaml:4:16: error: target 'a/b' is mapped twice",
        "m.yaml:5:3: error: target 'c' has a value and nested fields: a JSON value cannot be both",
        "m.yaml:7:44: error: 'default' does not apply to a repeating group with fields (put it on a field inside)",
        "m.yaml:8:25: error: 'type' does not apply to a group of fields (only source, when)",
        "m.yaml:9:6: error: expected a source path, a template, a constant or a mapping, got nothing",
        "m.yaml:10:17: error: function 'get_property' takes 1 to 2 arguments, got 3 (name, default?)",
        "m.yaml:11:30: error: function 'pad_left' has no argument 'widht' (did you mean 'width'?) "
        "(arguments: width, fill?)",
        "m.yaml:11:30: error: function 'pad_left' needs argument 'width' (width, fill?)",
        "m.yaml:12:30: error: a function is a name (trim) or a mapping of one name to its arguments "
        "({pad_left: [10, '0']})",
        "m.yaml:13:30: error: expected true or false, got 'yes'",
        "m.yaml:14:30: error: function 'date_format': argument 'timezone': unknown time zone 'Mars/Base'",
        "m.yaml:15:30: error: function 'lookup' needs either 'table' (a name under lookups) or 'values' "
        "(an inline table)",
        "m.yaml:16:30: error: function 'format_number': argument 'format': invalid number format 'zz': "
        "invalid format string",
        "m.yaml:17:3: error: invalid target 'y/': empty path segment",
        "m.yaml:18:3: error: invalid target '.': '.' (an element's own text) is only for xml output",
        "m.yaml:20:16: error: a property takes one value, not a group",
        "m.yaml:21:3: error: unknown field 'doc' (expected process or document)",
    ]


def test_xml_output_problems() -> None:
    assert problems("""
        foreach: $.x
        output: xml
        root: x:R
        fields:
          a/@b/c: $.x
          d: {foreach: "$.d[*]", fields: {"@e": {foreach: $.e}}}
        """) == [
        "m.yaml:2:10: error: a map-level foreach is for json (an array), csv or flat output; for xml put a "
        "repeating group under the root: {Line: {foreach: ..., fields: ...}}",
        "m.yaml:4:7: error: unknown namespace prefix 'x' in 'x:R' (declare it under namespaces)",
        "m.yaml:6:3: error: invalid target 'a/@b/c': an attribute ('@b') must come last",
        "m.yaml:7:35: error: target 'd/@e' is an attribute or text: it cannot take a group",
    ]


def test_lookup_problems() -> None:
    assert problems("""
        lookups:
          t: {A: {x: 1}, B: 2}
          u: [1, 2]
        fields:
          a: {source: $.a, function: {lookup: {table: t, column: x}}}
          b: {source: $.a, function: {lookup: {table: tt}}}
        """) == [
        "m.yaml:4:6: error: lookup table 'u' must be a mapping of key -> value, got a list",
        "m.yaml:6:30: error: lookup table 't' has no column 'x' for 'B'",
        "m.yaml:7:30: error: function 'lookup': argument 'table': unknown lookup table 'tt' (did you mean 't'?)",
    ]


def test_environment_variables_in_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATOM_MAP_PREFIX", "ERP-")
    m = build("""
        fields:
          id: {source: $.id, function: {prepend: "${ATOM_MAP_PREFIX}"}}
          region: {value: "${ATOM_MAP_REGION:-eu}"}
        """)
    out = m.apply(Document(b'{"id": "1"}'), LocalMapContext())
    assert out.json == {"id": "ERP-1", "region": "eu"}
    assert problems('fields: {a: "${ATOM_MAP_UNSET_X}"}\n') == [
        "m.yaml:1:13: error: environment variable 'ATOM_MAP_UNSET_X' is not set and has no default"]


# ------------------------------------------------------------------------------------------- run time


def apply(text: str, data: bytes) -> Document:
    return build(text).apply(Document(data), LocalMapContext())


@pytest.mark.parametrize(("text", "data", "message"), [
    ("fields: {a: $.a}", b'{"a": ', "map 'm': document is not valid JSON: unexpected end of data: "
                                      "line 1 column 7 (char 6)"),
    ("input: xml\nfields: {a: A}", b"<r><A>1</A>", "map 'm': document is not well-formed XML: Premature end of "
                                                   "data in tag r line 1, line 1, column 12 (<string>, line 1)"),
    ("input: xml\nfields: {a: A}", b"", "map 'm': document is not well-formed XML: Document is empty"),
    ("input: csv\nforeach: rows\nfields: {a: a}", b"a,b\n1,2,3\n",
     "map 'm': document: line 2 has 3 fields, expected at most 2 (a, b)"),
    ("input: csv\nforeach: rows\nfields: {a: a}", b'a,b\n"1,2\n',
     "map 'm': document is not valid CSV: line 2: unexpected end of data"),
    ("input: csv\nforeach: rows\nfields: {a: a}", b"a\n\xff\n", "map 'm': document is not UTF-8 text"),
    ("fields: {a: {source: $.a, type: int}}", b'{"a": "x1"}', "map 'm': field 'a': cannot convert 'x1' to int"),
    ('fields: {a: "{{ doc.json.nope.deeper }}"}', b"{}",
     "map 'm': field 'a': in '{{ doc.json.nope.deeper }}': 'dict object' has no attribute 'nope'"),
    ("output: xml\nroot: R\nfields: {A: $.a}", b'{"a": "bell\\u0007"}',
     "map 'm': field 'A': value is not valid in XML: All strings must be XML compatible"),
    ("output: xml\nroot: R\nfields: {A: $.a}", b'{"a": {"1x": 1}}',
     "map 'm': field 'A': '1x' is not a valid XML element name"),
    ("fields: {a: {source: $.a, function: {regex_replace: ['(a)', '\\2']}}}", b'{"a": "a"}',
     "map 'm': field 'a': regex_replace: bad replacement"),
    ("fields: {a: {source: $.a, function: {pad_left: [3, '{{ process.fill }}']}}}", b'{"a": "a"}',
     "map 'm': field 'a': in '{{ process.fill }}': 'dict object' has no attribute 'fill'"),
    ('fields: {a: "{{ doc.json.nope }}"}', b"{}",
     "map 'm': field 'a': in '{{ doc.json.nope }}': 'dict object' has no attribute 'nope'"),
    ('output: csv\nforeach: "{{ doc.json.rows }}"\nfields: {a: $.a}', b"{}",
     "map 'm': foreach: in '{{ doc.json.rows }}': 'dict object' has no attribute 'rows'"),
])
def test_document_errors_name_the_map_and_field(text: str, data: bytes, message: str) -> None:
    with pytest.raises(DocumentError) as info:
        apply(text, data)
    assert str(info.value).startswith(message), str(info.value)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<r><A>&lol4;</A></r>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<r><A>&xxe;</A></r>"""


@pytest.mark.parametrize("data", [BILLION_LAUGHS, XXE])
def test_hostile_xml_is_refused_not_expanded(data: bytes) -> None:
    with pytest.raises(DocumentError, match=r"^map 'm': document is not accepted: XML entity declarations are "
                                            r"not allowed$"):
        apply("input: xml\nfields: {a: A}", data)


def test_undeclared_entities_and_external_dtds_are_not_resolved() -> None:
    # no DTD is fetched (the address would refuse a connection anyway) and the reference stays text
    out = apply("input: xml\nfields: {a: A, b: B}",
                b'<?xml version="1.0"?><!DOCTYPE r SYSTEM "http://127.0.0.1:9/x.dtd"><r><A>&ext;</A><B>ok</B></r>')
    assert out.json == {"a": "&ext;", "b": "ok"}
