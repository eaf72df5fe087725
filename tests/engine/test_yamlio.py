from __future__ import annotations

import datetime as dt
import math
import textwrap
from typing import Any

import pytest

from atom import yamlio
from atom.yamlio import MAX_DEPTH, Where, YamlList, YamlMap, interpolate, load_yaml


def load(text: str) -> Any:
    data, problems = load_yaml(textwrap.dedent(text).lstrip(), "f.yaml")
    assert problems == [], [str(p) for p in problems]
    return data


def errors(text: str) -> list[str]:
    data, problems = load_yaml(textwrap.dedent(text).lstrip(), "f.yaml")
    assert data is None
    return [str(p) for p in problems]


@pytest.fixture(params=["c", "pure"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the C parser and again with the pure-Python one."""
    if request.param == "pure":
        monkeypatch.setattr(yamlio, "_CParser", None)
    return str(request.param)


def test_the_c_parser_is_installed() -> None:
    assert yamlio._CParser is not None, "ruamel.yaml.clib is missing: component files load with the slow parser"


def test_positions_of_keys_values_and_items(parser: str) -> None:
    data = load("""
        process: a
        start: {listen: {object: x}}
        shapes:
          - id: one
            notify: {message: "héllo", level: info}
          -   id: two
              return: {}
        """)
    assert isinstance(data, YamlMap) and isinstance(data["shapes"], YamlList)
    assert (data.line, data.col) == (1, 1)
    assert data.pos["process"] == (1, 1, 1, 10)
    assert data.pos["start"] == (2, 1, 2, 8)
    assert data["start"].pos["listen"] == (2, 9, 2, 17)
    assert data.pos["shapes"] == (3, 1, 4, 3)
    assert data["shapes"].pos == [(4, 5), (6, 7)]
    notify = data["shapes"][0]["notify"]
    assert notify.pos["message"] == (5, 14, 5, 23)
    assert notify.pos["level"] == (5, 32, 5, 39)  # columns count characters, not bytes


def test_where_locates_keys_values_items_and_falls_back(parser: str) -> None:
    data = load("""
        a:
          b: 1
          c: [x, {d: 2}]
        """)
    w = Where("f.yaml", data)
    assert str(w.location) == "f.yaml:1:1"
    a = w.child("a")
    assert str(a.key("c")) == "f.yaml:3:3"
    assert str(a.value("b")) == "f.yaml:2:6"
    c = a.child("c")
    assert str(c.value(1)) == "f.yaml:3:10"
    assert str(c.child(1).key("d")) == "f.yaml:3:11"
    assert str(c.child(0).location) == "f.yaml:3:7"  # a scalar item: its own position
    assert str(a.key("missing")) == "f.yaml:2:3"  # unknown keys fall back to the mapping
    assert str(c.value(9)) == "f.yaml:3:6"
    assert str(Where("<defaults>", {"plain": 1}).key("plain")) == "<defaults>"


def test_scalars_follow_yaml_1_2(parser: str) -> None:
    data = load("""
        strings: [yes, no, on, off, y, n, "12", '1.5', "true", ~x, 12ab]
        ints: [0, -3, +4, 1_000, 0x1f, 0o17, 0b101, 010]
        floats: [1.5, -2., 1e3, .5, .inf, -.inf]
        nan: .nan
        bools: [true, False, TRUE]
        nulls: [~, null, ]
        empty:
        date: 2024-01-02
        stamp: 2024-01-02T10:20:30Z
        tagged: [!!str 12, !!int "7", !!float 3, ! 12]
        true: a bool key
        2: an int key
        """)
    assert data["strings"] == ["yes", "no", "on", "off", "y", "n", "12", "1.5", "true", "~x", "12ab"]
    assert data["ints"] == [0, -3, 4, 1000, 31, 15, 5, 10]
    assert all(type(i) is int for i in data["ints"])
    assert data["floats"] == [1.5, -2.0, 1000.0, 0.5, math.inf, -math.inf]
    assert all(type(f) is float for f in data["floats"])
    assert math.isnan(data["nan"])
    assert data["bools"] == [True, False, True] and all(type(b) is bool for b in data["bools"])
    assert data["nulls"] == [None, None] and data["empty"] is None
    assert data["date"] == dt.date(2024, 1, 2)
    assert data["stamp"].replace(tzinfo=None) == dt.datetime(2024, 1, 2, 10, 20, 30)
    assert data["tagged"] == ["12", 7, 3.0, "12"]
    assert data[True] == "a bool key" and data[2] == "an int key"


def test_block_scalars_and_multiline(parser: str) -> None:
    data = load("""
        literal: |
          line 1
          line 2
        folded: >
          a
          b
        plain: one
          two
        """)
    assert data == {"literal": "line 1\nline 2\n", "folded": "a b\n", "plain": "one two"}


def test_yaml_1_1_directive_is_honoured(parser: str) -> None:
    data = load("""
        %YAML 1.1
        ---
        {a: yes, b: off, c: 010, d: plain}
        """)
    assert data == {"a": True, "b": False, "c": 8, "d": "plain"}


def test_colon_inside_plain_scalars_of_a_flow_mapping() -> None:
    """libyaml refuses `o:Order` in a flow mapping (YAML 1.2 allows it): such a file still loads."""
    data = load("""
        fields:
          id: {source: o:Order/o:Id, required: true}
        """)
    assert data == {"fields": {"id": {"source": "o:Order/o:Id", "required": True}}}
    assert data["fields"]["id"].pos["required"] == (2, 30, 2, 40)


def test_duplicate_keys_are_located_errors(parser: str) -> None:
    got = errors("""
        a: 1
        b: {x: 1, x: 2}
        a: 3
        """)
    assert got == ["f.yaml:2:11: error: invalid YAML: duplicate key 'x' (first at line 2)",
                   "f.yaml:3:1: error: invalid YAML: duplicate key 'a' (first at line 1)"]


def test_syntax_errors_are_located_and_worded_clearly(parser: str) -> None:
    assert errors("process: d\nshapes: [\n") == [
        "f.yaml:3:1: error: invalid YAML: expected the node content, but found '<stream end>'"]
    got = errors("a: 1\n  b: 2\n")
    assert len(got) == 1 and got[0].startswith("f.yaml:2:4: error: invalid YAML: mapping values are not allowed")


def test_billion_laughs_is_refused_without_expanding(parser: str) -> None:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    got = errors("\n".join(lines) + "\n")
    assert len(got) == 1
    assert got[0].startswith("f.yaml:")
    assert "anchors and aliases expand this document to more than 100,000 nodes" in got[0]


def test_aliases_and_merge_keys_work(parser: str) -> None:
    data = load("""
        base: &base {timeout: 5s, retries: 2}
        other: &other {retries: 9, mode: fast}
        a:
          <<: [*base, *other]
          retries: 3
        b: *base
        """)
    assert data["a"] == {"timeout": "5s", "retries": 3, "mode": "fast"}
    assert data["a"].pos["retries"] == (5, 3, 5, 12)  # written here: its own position
    assert data["a"].pos["timeout"] == (1, 14, 1, 23)  # merged: where it is written
    assert data["b"] == {"timeout": "5s", "retries": 2}


def test_bad_aliases_tags_keys_documents_and_nesting(parser: str) -> None:
    assert errors("a: &a [1, *a]\n") == [
        "f.yaml:1:11: error: invalid YAML: alias '*a' refers to a node that contains it"]
    assert errors("a: *nowhere\n") == ["f.yaml:1:4: error: invalid YAML: found undefined alias '*nowhere'"]
    assert errors("a: !custom 1\n") == ["f.yaml:1:4: error: invalid YAML: unsupported tag '!custom'"]
    assert errors("a: !!int twelve\n") == ["f.yaml:1:4: error: invalid YAML: 'twelve' is not a valid int"]
    assert errors("? [a, b]\n: 1\n") == [
        "f.yaml:1:3: error: invalid YAML: a mapping key must be a plain value, not a mapping or a list"]
    assert errors("a: {<<: [1]}\n") == [
        "f.yaml:1:10: error: invalid YAML: a merge key '<<' takes a mapping or a list of mappings"]
    assert errors("a: 1\n---\nb: 2\n") == [
        "f.yaml:2:1: error: invalid YAML: a file holds a single YAML document; found another one"]
    deep = "a: " + "[" * (MAX_DEPTH + 50) + "]" * (MAX_DEPTH + 50) + "\n"
    got = errors(deep)  # the top mapping is the first level
    assert got == [f"f.yaml:1:{3 + MAX_DEPTH}: error: invalid YAML: mappings and lists nested more than "
                   f"{MAX_DEPTH} levels deep"]
    assert load("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n") is not None
    assert errors("true: 1\n1: 2\n") == ["f.yaml:2:1: error: invalid YAML: duplicate key '1' (first at line 1)"]


def test_empty_and_comment_only_files_have_no_data(parser: str) -> None:
    assert load_yaml("", "f.yaml") == (None, [])
    assert load_yaml("# nothing here\n", "f.yaml") == (None, [])
    assert load_yaml("plain text\n", "f.yaml") == ("plain text", [])


def test_interpolation() -> None:
    env = {"A": "1", "EMPTY": ""}
    assert interpolate("x${A}y", env) == ("x1y", [])
    assert interpolate("${MISSING:-dflt}/${EMPTY:-e}/${EMPTY}", env) == ("dflt/e/", [])
    assert interpolate("${MISSING}-${OTHER}", env) == ("-", ["MISSING", "OTHER"])
    assert interpolate("no vars $A {A}", env) == ("no vars $A {A}", [])
