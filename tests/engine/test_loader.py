from __future__ import annotations

import ast
import subprocess
import sys
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


def test_duplicate_keys_and_alias_bombs_are_located_errors(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", """
        process: a
        shapes:
          - {id: r, return: {}}
        shapes: []
        """)
    bomb = ['  - {id: r, return: {}, extra: *i}']
    levels = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"{n}: &{n} [{', '.join(['*' + p] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)]
    (tmp_path / "b.yaml").write_text("process: b\nlol:\n" + "".join(f"  {x}\n" for x in levels)
                                      + "shapes:\n" + "\n".join(bomb) + "\n")
    got = [g.split("/")[-1] for g in problems(tmp_path)]
    assert got[0] == "a.yaml:4:1: error: invalid YAML: duplicate key 'shapes' (first at line 2)"
    assert got[1].startswith("b.yaml:") and "anchors and aliases expand this document" in got[1]
    assert len(got) == 2


def test_component_files_skip_hidden_tests_and_config(tmp_path: Path) -> None:
    from atom.loader import component_files

    for rel in ("b.yaml", "a/c.yml", "a/z_test.yaml", "atom.yaml", ".git/x.yaml", "a/.hidden/y.yaml", ".h.yaml",
                "notes.txt", "a-b.yaml"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x: 1\n")
    (tmp_path / "dir.yaml").mkdir()
    got = [p.relative_to(tmp_path).as_posix() for p in component_files(tmp_path)]
    assert got == ["a/c.yml", "a-b.yaml", "b.yaml"]


def test_flow_mappings_with_colons_in_plain_values_load(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", """
        process: a
        properties: {path: o:Order/o:Id}
        shapes:
          - {id: r, return: {}}
        """)
    assert dict(load_directory(tmp_path).processes["a"].properties) == {"path": "o:Order/o:Id"}


def test_connector_packages_are_imported_when_first_used(tmp_path: Path) -> None:
    write(tmp_path, "files.yaml", f"""
        connection: files
        type: disk
        directory: {tmp_path / 'data'}
        """)
    write(tmp_path, "a.yaml", """
        process: a
        shapes:
          - {id: w, connector: {connection: files, action: send, operation: {file_name: x.json}}}
        """)
    code = ("import sys\nfrom atom.loader import load_directory\n"
            f"dep = load_directory({str(tmp_path)!r})\n"
            "print(sorted(m for m in sys.modules if m.startswith('connectors.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = set(ast.literal_eval(out.stdout))
    assert "connectors.disk" in loaded
    assert not loaded & {"connectors.soap", "connectors.http", "connectors.sftp", "connectors.database"}


def test_registry_reports_connector_types_that_fail_to_load() -> None:
    from importlib.metadata import EntryPoint

    from atom.connector import Connector, ConnectorRegistry

    reg = ConnectorRegistry.from_entry_points([
        EntryPoint("test", "connectors.testing:TestConnector", "atom.connectors"),
        EntryPoint("broken", "atom_no_such_module:Thing", "atom.connectors"),
        EntryPoint("odd", "atom.loader:KINDS", "atom.connectors"),
    ])
    cls = reg.get("test")
    assert cls is not None and issubclass(cls, Connector)
    assert reg.get("broken") is None
    assert reg.errors["broken"].startswith("ModuleNotFoundError")
    assert reg.errors["odd"] == "entry point is not a Connector subclass"
    assert reg.names() == ["test"]
    assert "test" in reg and "broken" not in reg


def test_a_process_of_1500_shapes_in_a_row_loads(tmp_path: Path) -> None:
    n = 1500  # deeper than Python's recursion limit (1,000)
    shapes = "".join(f"  - {{id: s{i}, set_properties: {{process: {{n: '{i}'}}}}}}\n" for i in range(n))
    (tmp_path / "long.yaml").write_text(f"process: long\nshapes:\n{shapes}  - {{id: r, return: {{}}}}\n")
    dep = load_directory(tmp_path)
    assert len(dep.processes["long"].shapes) == n + 1
    (tmp_path / "long.yaml").write_text(f"process: long\nshapes:\n{shapes}"
                                        "  - {id: back, notify: {message: x}, next: s1}\n")
    got = problems(tmp_path)
    assert len(got) == 1
    cycle = " -> ".join([*(f"s{i}" for i in range(1, n)), "back", "s1"])
    assert got[0].endswith(f"long.yaml:4:5: error: shapes form a cycle: {cycle}")
