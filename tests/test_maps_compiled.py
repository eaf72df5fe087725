"""Maps compiled to generated code (atom.maps._codegen, atom.maps._fused) give what the general
path gives: the same values, the same errors, for every input."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atom.document import Document
from atom.errors import DocumentError
from atom.maps import LocalMapContext
from atom.maps._rules import Leaf, Repeat, Run
from tests.test_maps import build, jrun

OPS = ["add", "subtract", "multiply", "divide"]

numbers = st.one_of(
    st.integers(-10**6, 10**6),
    st.sampled_from([0.125, 2.5, -2.5, 0.005, -0.0, 1.0, 1e20, 5e-324]),  # ties, signs, extremes
    st.floats(-1e9, 1e9, allow_nan=False).map(lambda f: round(f, 3)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-10**6, max_value=10**6),
)
values = st.one_of(numbers, st.none(), st.booleans(), st.sampled_from(["12.5", " 3 ", "", "  ", "x1", "1e3", "NaN",
                                                                       "Infinity", "1_000"]),
                   st.just([1, 2]), st.just({"a": 1}))


def _chain(draw: Any) -> list[Any]:
    steps: list[Any] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from([*OPS, "round"]))
        if kind == "round":
            steps.append({"round": draw(st.integers(0, 4))})
        elif draw(st.booleans()):
            steps.append({kind: "{{ item.n }}"})
        else:
            steps.append({kind: draw(st.sampled_from([2, 0, 3, 0.1, 1.25, -7, 0.005]))})
    return steps


@st.composite
def chains(draw: Any) -> tuple[list[Any], Any, Any]:
    steps = _chain(draw)
    return steps, draw(values), draw(values)


def _leaf(steps: list[Any]) -> Leaf:
    m = build(json.dumps({"input": "json", "output": "json", "fields": {"out": {"source": "$.v", "functions": steps}}}))
    leaf = m._children[0]
    assert isinstance(leaf, Leaf)
    return leaf


def _outcome(fn: Any, c: Any, run: Run) -> Any:
    try:
        v = fn(c, run)
    except DocumentError as exc:
        return ("error", str(exc))
    return ("value", type(v).__name__, str(v))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains())
def test_fused_arithmetic_equals_the_general_path(case: tuple[list[Any], Any, Any]) -> None:
    steps, v, n = case
    leaf = _leaf(steps)
    compute = leaf.compute
    assert hasattr(compute, "generic"), "an arithmetic chain is compiled to one function"
    item = {"n": n}
    run = Run("m", Document(b"{}"), LocalMapContext(), {"item": item, "index": 0}, {})
    c = {"v": v}
    assert _outcome(compute, c, run) == _outcome(compute.generic, c, run)


prices = st.one_of(
    st.integers(-10**7, 10**7).map(lambda n: n / 100),  # amounts written with 2 decimals
    st.integers(-10**7, 10**7).map(lambda n: n / 1000),
    st.integers(-10**5, 10**5),
    st.sampled_from([2.675, 1.005, 0.125, 0.285, 1.115, 8.345, -2.675, 0.0, -0.0, 4.5, 0.5, 1e15, 3e-310]),
    st.floats(-1e12, 1e12, allow_nan=False),
)


@st.composite
def money_chains(draw: Any) -> tuple[list[Any], Any, Any]:
    """Multiplications and divisions ending in a round: the chains that take the float path."""
    steps: list[Any] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["multiply", "divide"]))
        if draw(st.booleans()):
            steps.append({kind: "{{ item.n }}"})
        else:
            steps.append({kind: draw(st.sampled_from([2, 3, 0.1, 1.25, -7, 0.005, 1.2, 100]))})
    steps.append({"round": draw(st.integers(0, 4))})
    return steps, draw(prices), draw(st.one_of(prices, st.integers(0, 12), st.sampled_from([True, "2", None])))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(money_chains())
def test_float_path_of_money_chains_equals_the_general_path(case: tuple[list[Any], Any, Any]) -> None:
    test_fused_arithmetic_equals_the_general_path.hypothesis.inner_test(case)  # type: ignore[attr-defined]


def test_float_path_rounds_ties_as_decimals_do() -> None:
    leaf = _leaf([{"multiply": "{{ item.n }}"}, {"round": 2}])
    run = Run("m", Document(b"{}"), LocalMapContext(), {"item": {"n": 1}, "index": 0}, {})
    for price, qty, want in [(2.675, 1, 2.68), (1.005, 1, 1.01), (0.285, 1, 0.29), (-2.675, 1, -2.68),
                             (0.125, 2, 0.25), (1.115, 3, 3.35), (4.75, 2, 9.5), (2.5, 2, 5), (0.1, 3, 0.3)]:
        run.scope["item"] = {"n": qty}
        got = leaf.compute({"v": price}, run)
        assert got == want and type(got) is type(want), (price, qty, got)


def test_fused_arithmetic_keeps_decimal_semantics() -> None:
    m = build("""
        input: json
        output: json
        fields:
          lines:
            foreach: $.items[*]
            fields:
              amount: {source: $.price, functions: [{multiply: "{{ item.qty }}"}, {round: 2}]}
          total:
            source: {foreach: "$.items[*]", source: $.price, functions: [{multiply: "{{ item.qty }}"}]}
            functions: [sum, {round: 2}]
          third: {source: $.one, functions: [{divide: 3}, {round: 4}]}
          exact: {source: $.tenth, functions: [{add: 0.2}]}
          tie: {source: $.tie, functions: [{round: 2}]}
          negative_tie: {source: $.tie, functions: [negate, {round: 2}]}
    """)
    out = jrun(m, {"items": [{"price": 2.675, "qty": 1}, {"price": 0.1, "qty": 3}, {"price": "1.005", "qty": "2"}],
                   "one": 1, "tenth": 0.1, "tie": 0.125})
    # half up on the decimal written in the document (2.675 -> 2.68), exact decimal sums (0.3, not 0.30000000000000004)
    assert out["lines"] == [{"amount": 2.68}, {"amount": 0.3}, {"amount": 2.01}]
    assert out["total"] == 4.99
    assert out["third"] == 0.3333
    assert out["exact"] == 0.3
    assert out["tie"] == 0.13 and out["negative_tie"] == -0.13  # half up, away from zero


def test_fused_arithmetic_errors_name_the_field_and_item() -> None:
    m = build("""
        input: json
        output: json
        fields:
          lines:
            foreach: $.items[*]
            fields:
              amount: {source: $.price, functions: [{divide: "{{ item.qty }}"}]}
    """)
    with pytest.raises(DocumentError) as exc:
        jrun(m, {"items": [{"price": 1, "qty": 2}, {"price": 5, "qty": 0}]})
    assert "lines[2]/amount" in str(exc.value) and "divide" in str(exc.value)
    with pytest.raises(DocumentError) as exc:
        jrun(m, {"items": [{"price": 1, "qty": "two"}]})
    assert "lines[1]/amount" in str(exc.value) and "two" in str(exc.value)


def test_generated_walk_handles_deep_nesting_and_any_key() -> None:
    # keys are data, never code: quotes, backslashes and newlines in target names and paths
    odd = 'a"b\\c\nd\'e'
    fields: dict[str, Any] = {odd: "$['x']"}
    node = fields
    for i in range(10):  # deeper than the generated code nests: inner groups use their emitters
        inner: dict[str, Any] = {"v": "$.v", "rows": {"foreach": "$.rows[*]", "fields": {"k": "$.k"}}}
        node[f"g{i}"] = {"foreach": "$.rows[*]", "fields": inner}
        node = inner
    m = build(json.dumps({"input": "json", "output": "json", "fields": fields}))
    out = jrun(m, {"x": 1, "rows": [{"k": 1, "v": "a", "rows": [{"k": 2, "v": "b", "rows": []}]}]})
    assert out[odd] == 1
    assert out["g0"][0]["v"] == "a" and out["g0"][0]["rows"] == [{"k": 2}]
    assert out["g0"][0]["g1"][0]["v"] == "b"


def test_generated_walk_equals_the_emitters() -> None:
    m = build("""
        input: json
        output: json
        fields:
          id: $.id
          name: {source: $.customer.name, functions: [upper]}
          missing: $.nope.deeper
          kept: {source: $.nope, keep_null: true}
          cond: {source: $.id, when: "{{ doc.json.flag }}"}
          customer/email: $.customer.email
          customer/city: {value: Lyon}
          lines:
            foreach: $.items[*]
            fields:
              sku: $.sku
              first: $.tags[0]
              nested/qty: $.qty
          scalars:
            foreach: $.items[*]
            value: $.sku
    """)
    data = {"id": 7, "flag": True, "customer": {"name": "ann", "email": None},
            "items": [{"sku": "a", "qty": 1, "tags": ["t"]}, {"sku": "b", "qty": 2}, "not an object"]}
    doc = Document(json.dumps(data).encode())
    got = m.apply(doc, LocalMapContext()).json
    # the same walk through the nodes' own emitters
    ctx = LocalMapContext()
    src = Document(json.dumps(data).encode()).json
    run = Run(m.name, doc, ctx, {**ctx.scope(doc), "item": src, "index": 0}, doc.props)
    want: dict[str, Any] = {}
    for e in m._emits_json:
        e(want, src, run)
    assert got == want
    assert got["lines"][2] == {} and got["kept"] is None and "missing" not in got
    assert isinstance(m._children[-1], Repeat)


def test_decimal_to_number_is_unchanged() -> None:
    from atom.maps._values import decimal_to_number as n
    assert [n(Decimal(s)) for s in ("42.15", "5.00", "-0", "1E+16", "0.1")] == [42.15, 5, 0, 10**16, 0.1]
    assert n(Decimal("10000000000000000.5")) == 1e16
    with pytest.raises(OverflowError):
        n(Decimal("Infinity"))
