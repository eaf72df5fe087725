"""The CLI, driven through click's CliRunner."""

from __future__ import annotations

import textwrap
from pathlib import Path

from click.testing import CliRunner

from atom.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_validate_samples_ok() -> None:
    res = CliRunner().invoke(main, ["validate", str(ROOT / "processes")])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("ok: ")


def test_validate_reports_all_errors_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("process: a\nshapes:\n  - {id: x, notfy: {}}\n  - {id: y, retrun: {}}\n")
    res = CliRunner().invoke(main, ["validate", str(tmp_path)])
    assert res.exit_code == 1
    assert "a.yaml:3:13: error: unknown shape type or field 'notfy'" in res.output
    assert "a.yaml:4:13: error: unknown shape type or field 'retrun' (did you mean 'return'?)" in res.output
    assert "2 error(s)" in res.output


def test_run_prints_returned_documents_and_status(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["run", str(ROOT / "processes" / "hello.yaml"), "--prop", "name=CLI"])
    assert res.exit_code == 0, res.output
    assert "Hello, CLI!" in res.output


def test_run_exits_1_on_error(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(textwrap.dedent("""
        process: p
        shapes:
          - {id: m, message: {template: "{{ doc.json.id }}"}}
          - {id: r, return: {}}
        """))
    inp = tmp_path / "in.txt"
    inp.write_text("{broken")
    res = CliRunner().invoke(main, ["run", "p", "--dir", str(tmp_path), "--input", str(inp)])
    assert res.exit_code == 1
    assert "ERROR: message 'm'" in res.output and "not valid JSON" in res.output


def test_process_tests_pass_and_a_wrong_expectation_fails_with_a_diff(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["test", str(ROOT / "processes")])
    assert res.exit_code == 0, res.output
    (tmp_path / "hello.yaml").write_text((ROOT / "processes" / "hello.yaml").read_text())
    (tmp_path / "hello_test.yaml").write_text(
        'test: hello\ncases:\n  - name: wrong\n    expect: {documents: ["Hello, moon!"]}\n')
    res = CliRunner().invoke(main, ["test", str(tmp_path)])
    assert res.exit_code == 1
    assert "-Hello, moon!" in res.output and "+Hello, world!" in res.output
    assert "0 passed, 1 failed" in res.output


def test_shape_reference_is_generated_from_the_specs() -> None:
    from atom.docgen import shapes_markdown

    assert (ROOT / "docs" / "shapes.md").read_text() == shapes_markdown(), (
        "docs/shapes.md is stale: run `python -m atom.docgen shapes > docs/shapes.md`")
