"""Round-trip properties (hypothesis), maps inside processes (real loader and engine), schema and docs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from atom.document import Document
from atom.engine import Engine
from atom.loader import load_directory
from atom.maps import FUNCTIONS, MAP_SPEC, LocalMapContext

from .test_maps import build

# text that XML can carry (no control characters, no lone surrogates); \r is written as &#13;
_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc"),  # type: ignore[arg-type]
                              blacklist_characters="\ufffe\uffff")
                | st.sampled_from("\t\n\r"), max_size=12)
_ORDERS = st.fixed_dictionaries({
    "id": _TEXT,
    "customer": st.fixed_dictionaries({"name": _TEXT}, optional={"email": _TEXT}),
    "items": st.lists(st.fixed_dictionaries({
        "sku": _TEXT,
        "qty": st.integers(-10**12, 10**12),
        "price": st.floats(allow_nan=False, allow_infinity=False, width=64),
        "tags": st.lists(_TEXT, max_size=3),
    }), max_size=5),
})

TO_XML = build("""
    output: xml
    root: Order
    fields:
      "@id": $.id
      Customer/Name: $.customer.name
      Customer/Email: {source: $.customer.email, keep_null: false}
      Lines/Line:
        foreach: $.items[*]
        fields:
          "@sku": $.sku
          Qty: $.qty
          Price: $.price
          Tag: {foreach: "$.tags[*]"}
    """)

TO_JSON = build("""
    input: xml
    fields:
      id: "@id"
      customer:
        source: Customer
        fields:
          name: {source: Name, default: ""}
          email: Email
      items:
        foreach: Lines/Line
        fields:
          sku: "@sku"
          qty: {source: Qty, type: int}
          price: {source: Price, type: float}
          tags: {foreach: Tag}
    """)


@settings(max_examples=150, deadline=None)
@given(_ORDERS)
def test_json_xml_json_round_trip(order: dict) -> None:  # type: ignore[type-arg]
    ctx = LocalMapContext()
    xml = TO_XML.apply(Document.from_json(order), ctx)
    back = TO_JSON.apply(Document(xml.data), ctx)
    if not order["customer"]["name"].strip():  # `default: ""` applies to blank text too
        order = {**order, "customer": {**order["customer"], "name": ""}}
    assert back.json == order
    assert json.loads(back.data) == order


_CELL = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"),  # type: ignore[arg-type]
                max_size=10)

CSV_OUT = build("""
    output: csv
    foreach: $.rows[*]
    fields: {a: $.a, b: $.b, c: $.c}
    """)
CSV_IN = build("""
    input: csv
    fields:
      rows:
        foreach: rows
        fields: {a: {source: a, keep_null: true}, b: {source: b, keep_null: true}, c: {source: c, keep_null: true}}
    """)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.fixed_dictionaries({"a": _CELL, "b": _CELL, "c": _CELL}), max_size=6))
def test_json_csv_json_round_trip(rows: list[dict[str, str]]) -> None:
    ctx = LocalMapContext()
    csv_doc = CSV_OUT.apply(Document.from_json({"rows": rows}), ctx)
    back = CSV_IN.apply(Document(csv_doc.data), ctx).json["rows"]
    assert back == rows


# ------------------------------------------------------------------------------------ inside processes


def write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(textwrap.dedent(text))


async def test_map_component_and_inline_map_in_a_process(tmp_path: Path) -> None:
    write(tmp_path, "to-xml.yaml", """
        map: order-to-xml
        output: xml
        root: Order
        fields:
          "@id": $.id
          Total: {source: $.total, function: {set_property: last_total}}
          Lines/Line: {foreach: "$.items[*]", fields: {Sku: {source: $.sku, required: true}}}
        """)
    write(tmp_path, "p.yaml", """
        process: p
        shapes:
          - id: t
            try_catch: {try: m, catch: failed}
          - {id: m, map: order-to-xml}
          - id: back
            map:
              input: xml
              fields:
                id: "@id"
                skus: {foreach: Lines/Line/Sku}
                total: "{{ process.last_total }}"
            next: r
          - {id: failed, message: {template: "{{ doc.props.try_catch_message }}"}}
          - {id: r, return: {}}
        """)
    dep = load_directory(tmp_path)
    assert dep.maps["order-to-xml"].compiled.output == "xml"
    eng = Engine(dep)
    try:
        ex = await eng.execute("p", [Document(b'{"id": "1", "total": 5, "items": [{"sku": "a"}, {"sku": "b"}]}'),
                                     Document(b'{"id": "2", "total": 6, "items": [{"sku": "a"}, {}]}')])
    finally:
        await eng.stop()
    assert ex.status == "COMPLETE", ex.message
    got = [d.text for d in ex.returned]
    # a shape handles the whole batch before the next one: the property holds the last document's total
    assert json.loads(got[0]) == {"id": "1", "skus": ["a", "b"], "total": "6"}
    assert "map 'order-to-xml': field 'Lines/Line[2]/Sku': required value is missing" in got[1]


def test_load_errors_of_maps_come_with_the_other_component_errors(tmp_path: Path) -> None:
    write(tmp_path, "m.yaml", """
        map: broken
        fields:
          a: {source: $.a, function: nope}
        """)
    write(tmp_path, "p.yaml", """
        process: p
        shapes:
          - {id: m, map: {output: xml, root: R, fields: {A: "$.a["}}}
          - {id: r, return: {}}
        """)
    import pytest

    from atom.errors import LoadError

    with pytest.raises(LoadError) as info:
        load_directory(tmp_path)
    text = str(info.value)
    assert "m.yaml:4:30: error: unknown function 'nope'" in text
    assert "p.yaml:4:53: error: invalid JSONPath '$.a['" in text


# ------------------------------------------------------------------------------------------ schema, docs


def test_schema_is_json_and_docs_cover_every_function() -> None:
    schema = MAP_SPEC.schema()
    json.dumps(schema)
    assert set(schema["properties"]) >= {"input", "output", "root", "fields", "foreach", "lookups", "properties"}
    docs = (Path(__file__).resolve().parent.parent / "docs" / "maps.md").read_text()
    missing = [name for name in FUNCTIONS if f"`{name}`" not in docs]
    assert not missing, f"functions without documentation: {missing}"
