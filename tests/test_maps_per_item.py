"""Values per item (`source: {foreach: ..., ...}`) reduced by the field's functions, and template
arguments read by direct lookups: results, errors at run time and at load time."""

from __future__ import annotations

import pytest

from atom.errors import DocumentError

from .test_maps import build, jrun, problems, run

LINES = {"items": [{"sku": "a", "qty": 3, "price": 0.1}, {"sku": "b", "qty": 1, "price": 2.675},
                   {"sku": "c", "qty": 2, "price": 1.005, "gift": True}]}


def test_sum_of_a_computed_value_per_item() -> None:
    m = build("""
        fields:
          total:
            source: {foreach: "$.items[*]", source: $.price, functions: [{multiply: "{{ item.qty }}"}, {round: 2}]}
            functions: [sum, {round: 2}]
            type: number
          by_template: {source: {foreach: "$.items[*]", value: "{{ item.qty * 10 }}"}, function: sum}
          paid: {source: {foreach: "$.items[*]", source: $.qty, when: "{{ not item.get('gift') }}"}, function: sum}
          most: {source: {foreach: "$.items[*]", source: $.qty}, function: max}
          skus: {source: {foreach: "$.items[*]", source: $.sku, function: upper}, function: {join: "+"}}
          gifts: {source: {foreach: "$.items[*]", source: $.gift}, function: count}
          each: {source: {foreach: "$.items[*]", source: $.qty, function: {multiply: 2}}}
        """)
    # decimals: 3 x 0.1 is 0.3, 2.675 rounds half up to 2.68, 2 x 1.005 is 2.01
    assert jrun(m, LINES) == {"total": 4.99, "by_template": 60, "paid": 4, "most": 3, "skus": "A+B+C", "gifts": 1,
                              "each": [6, 2, 4]}
    assert jrun(m, {"items": []}) == {"total": 0, "by_template": 0, "paid": 0, "skus": "", "gifts": 0, "each": []}


def test_per_item_values_from_xml_to_xml() -> None:
    m = build("""
        input: xml
        output: xml
        root: Totals
        fields:
          Amount:
            source: {foreach: Lines/Line, source: Price, function: {multiply: "{{ xpath(item, 'Qty') }}"}}
            function: sum
          Skus: {source: {foreach: Lines/Line, source: "@sku"}, function: {join: ","}}
        """)
    xml = b"<O><Lines><Line sku='a'><Qty>2</Qty><Price>1.25</Price></Line>" \
          b"<Line sku='b'><Qty>1</Qty><Price>3</Price></Line></Lines></O>"
    assert run(m, xml).data == b"<?xml version='1.0' encoding='UTF-8'?>\n<Totals><Amount>5.50</Amount>" \
                               b"<Skus>a,b</Skus></Totals>"


def test_a_failing_item_names_the_field_the_item_and_the_template() -> None:
    m = build("""
        fields:
          total:
            source: {foreach: "$.items[*]", source: $.price, function: {multiply: "{{ item.qty }}"}}
            function: sum
        """)
    with pytest.raises(DocumentError, match=r"^map 'm': field 'total': item 2 of '\$.items\[\*\]': "
                                            r"in '\{\{ item.qty \}\}': 'dict object' has no attribute 'qty'$"):
        run(m, {"items": [{"qty": 1, "price": 1}, {"price": 2}]})
    with pytest.raises(DocumentError, match=r"^map 'm': field 'total': item 1 of '\$.items\[\*\]': "
                                            r"function 'multiply': argument 'number': expected a number, got 'x'$"):
        run(m, {"items": [{"qty": "x", "price": 1}]})


def test_template_arguments_read_the_current_item() -> None:
    m = build("""
        fields:
          lines:
            foreach: $.items[*]
            fields:
              amount: {source: $.price, functions: [{multiply: "{{ item.qty }}"}, {round: 2}]}
              label: {source: $.sku, function: {append: "-{{ index }}-{{ item.qty }}"}}
        """)
    assert jrun(m, LINES)["lines"] == [{"amount": 0.3, "label": "a-0-3"}, {"amount": 2.68, "label": "b-1-1"},
                                       {"amount": 2.01, "label": "c-2-2"}]
    with pytest.raises(DocumentError, match=r"field 'lines\[1\]/amount': in '\{\{ item.qty \}\}': 'dict object' "
                                            r"has no attribute 'qty'"):
        run(m, {"items": [{"price": 1}]})


def test_per_item_load_problems_are_located() -> None:
    got = problems("""
        fields:
          a: {source: {source: $.x}}
          b: {source: {foreach: "$.items[*]", fields: {x: $.x}}}
          c: {source: {foreach: "$.items[*]", source: $.x, functoin: sum}}
          d: {source: {foreach: "items", source: $.x}}
          e: {source: {foreach: "$.items[*]", source: "{{ item.x | nofilter }}"}}
        """)
    assert got == [
        "m.yaml:3:15: error: a source given as a mapping is a value per item: it needs 'foreach' "
        "({foreach: '$.items[*]', source: '$.price'})",
        "m.yaml:4:39: error: 'fields' does not apply to a value per item",
        "m.yaml:5:52: error: unknown field 'functoin' (did you mean 'function'?)",
        "m.yaml:6:25: error: 'items' is not a JSONPath: JSON sources start with '$' (write '$.items[*]')",
        "m.yaml:7:47: error: invalid template '{{ item.x | nofilter }}': No filter named 'nofilter'.",
    ]
