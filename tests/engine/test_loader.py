from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from atom.errors import LoadError
from atom.loader import load_directory


def write(d: Path, name: str, text: str) -> None:
    (d / name).write_text(textwrap.dedent(text).lstrip())


def problems(d: Path) -> list[str]:
    with pytest.raises(LoadError) as err:
        load_directory(d)
    return [str(p) for p in err.value.problems]


def test_five_mistakes_five_located_errors(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", """
        process: a
        start: {none: {}}
        shapes:
          - id: one
            notfy: {message: hi}
          - id: two
            decision: {when: "{{ doc.json.x > }}", then: three, else: end}
          - id: three
            connector: {connection: nowhere, action: send}
          - id: four
            return: {}
        """)
    write(tmp_path, "b.yaml", """
        process: b
        mode: fast
        shapes:
          - {id: x, stop: {}, next: end}
        """)
    got = [g.split("/")[-1] for g in problems(tmp_path)]
    assert got == [
        "a.yaml:5:5: error: unknown shape type or field 'notfy' (did you mean 'notify'?)",
        "a.yaml:7:22: error: invalid template '{{ doc.json.x > }}': unexpected 'end of template'",
        "a.yaml:9:29: error: unknown connection 'nowhere'",
        "b.yaml:2:7: error: 'fast' is not one of general, bridge, low_latency",
        "b.yaml:4:23: error: a stop shape cannot have 'next'",
    ]


def test_errors_carry_file_line_col(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", """
        process: a
        shapes:
          - id: s
            set_properties: {proces: {x: 1}}
        """)
    got = problems(tmp_path)
    assert len(got) == 1
    assert got[0].endswith("a.yaml:4:22: error: unknown field 'proces' (did you mean 'process'?)")


def test_dangling_unreachable_and_cycle(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", """
        process: a
        shapes:
          - {id: d, decision: {when: "{{ true }}", then: nope, else: end}}
          - {id: orphan, return: {}}
        """)
    write(tmp_path, "b.yaml", """
        process: b
        shapes:
          - {id: p, notify: {message: x}, next: q}
          - {id: q, notify: {message: y}, next: p}
        """)
    got = "\n".join(problems(tmp_path))
    assert "shape 'd': then refers to unknown shape 'nope'" in got
    assert "shapes form a cycle: p -> q -> p" in got


def test_unreachable(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", """
        process: a
        shapes:
          - {id: r, return: {}}
          - {id: orphan, return: {}}
        """)
    assert any("shape 'orphan' is unreachable from the first shape 'r'" in p for p in problems(tmp_path))


def test_duplicates_missing_map_unknown_kind_and_bad_yaml(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "process: a\nshapes:\n  - {id: m, map: missing-map}\n")
    write(tmp_path, "b.yaml", "process: a\nshapes:\n  - {id: r, return: {}}\n")
    write(tmp_path, "c.yaml", "proces: c\n")
    write(tmp_path, "d.yaml", "process: d\nshapes: [\n")
    got = "\n".join(problems(tmp_path))
    assert "unknown map 'missing-map'" in got
    assert "duplicate process name 'a'" in got
    assert "c.yaml:1:1: error: unknown component kind 'proces' (did you mean 'process'?)" in got
    assert "d.yaml:3:1: error: invalid YAML" in got


def test_env_interpolation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATOM_TEST_GREETING", "hello")
    write(tmp_path, "a.yaml", """
        process: a
        properties: {greeting: "${ATOM_TEST_GREETING}", other: "${ATOM_TEST_UNSET_X:-fallback}"}
        shapes:
          - {id: r, return: {}}
        """)
    dep = load_directory(tmp_path)
    assert dict(dep.processes["a"].properties) == {"greeting": "hello", "other": "fallback"}
    write(tmp_path, "b.yaml", """
        process: b
        properties: {x: "${ATOM_TEST_UNSET_Y}"}
        shapes:
          - {id: r, return: {}}
        """)
    assert any("environment variable 'ATOM_TEST_UNSET_Y' is not set" in p for p in problems(tmp_path))


def test_loaded_components_are_immutable(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "process: a\nshapes:\n  - {id: r, return: {}}\n")
    dep = load_directory(tmp_path)
    with pytest.raises(TypeError):
        dep.processes["b"] = dep.processes["a"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        dep.processes["a"].name = "x"  # type: ignore[misc]


def test_versions_bump_only_on_change(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "process: a\nshapes:\n  - {id: r, return: {}}\n")
    write(tmp_path, "b.yaml", "process: b\nshapes:\n  - {id: r, return: {}}\n")
    d1 = load_directory(tmp_path)
    write(tmp_path, "a.yaml", "process: a\ndescription: changed\nshapes:\n  - {id: r, return: {}}\n")
    d2 = load_directory(tmp_path, previous=d1)
    assert d2.processes["a"].version == 2
    assert d2.processes["b"].version == 1
