"""The disk connector against a real temporary directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from atom.connector import OperationContext
from atom.document import Document
from atom.spec import CheckContext, Spec
from atom.yamlio import Where
from connectors.disk import DiskConnector, DiskStore

CTX = OperationContext(None)


def operation(action: str, node: dict[str, Any]) -> dict[str, Any]:
    ctx = CheckContext()
    where = Where("<test>", node)
    values = DiskConnector.operations[action].check(node, where, ctx)
    values = DiskConnector.check_operation(action, values, where, ctx)
    assert not ctx.problems, [str(p) for p in ctx.problems]
    return values


def problems(action: str, node: dict[str, Any]) -> list[str]:
    ctx = CheckContext()
    where = Where("<test>", node)
    values = DiskConnector.operations[action].check(node, where, ctx)
    DiskConnector.check_operation(action, values, where, ctx)
    return [p.message for p in ctx.problems]


@pytest.fixture
async def disk(tmp_path: Path) -> Any:
    cfg = {"directory": str(tmp_path / "base")}
    ctx = CheckContext()
    values = Spec(list(DiskConnector.connection_spec.fields)).check(cfg, Where("<test>"), ctx)
    assert not ctx.problems
    conn = DiskConnector("files", values)
    await conn.start()
    yield conn
    await conn.stop()


def base(conn: DiskConnector) -> Path:
    return Path(conn.base)


def put(conn: DiskConnector, rel: str, data: str | bytes, mtime: float | None = None) -> Path:
    p = base(conn) / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    if mtime is not None:
        os.utime(p, (mtime, mtime))
    return p


def listing(conn: DiskConnector) -> list[str]:
    root = base(conn)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------- get

async def test_start_creates_the_directory(tmp_path: Path) -> None:
    conn = DiskConnector("files", {"directory": str(tmp_path / "a" / "b")})
    assert not (tmp_path / "a").exists()  # the constructor does nothing
    await conn.start()
    assert (tmp_path / "a" / "b").is_dir()
    await conn.stop()


async def test_get_with_pattern_gives_one_document_per_file(disk: DiskConnector) -> None:
    put(disk, "b.csv", "2", mtime=1_700_000_000)
    put(disk, "a.csv", "one")
    put(disk, "c.txt", "3")
    put(disk, "sub/d.csv", "4")
    docs = await disk.get(operation("get", {"pattern": "*.csv"}), [], CTX)
    assert [d.data for d in docs] == [b"one", b"2"]
    assert docs[1].props == {"file_name": "b.csv", "file_path": "b.csv", "file_size": "1",
                             "file_mtime": "2023-11-14T22:13:20+00:00"}
    assert all(d.error is None for d in docs)
    assert listing(disk) == ["a.csv", "b.csv", "c.txt", "sub/d.csv"]  # keep is the default


async def test_get_recursive_sort_and_limit(disk: DiskConnector) -> None:
    put(disk, "in/z.csv", "z", mtime=1_000)
    put(disk, "in/x/y.csv", "y", mtime=3_000)
    put(disk, "in/a.csv", "a", mtime=2_000)
    docs = await disk.get(operation("get", {"directory": "in", "recursive": True, "sort": "mtime"}), [], CTX)
    assert [d.props["file_path"] for d in docs] == ["in/z.csv", "in/a.csv", "in/x/y.csv"]
    docs = await disk.get(operation("get", {"directory": "in", "recursive": True, "max_files": 2}), [], CTX)
    assert [d.props["file_path"] for d in docs] == ["in/a.csv", "in/x/y.csv"]
    docs = await disk.get(operation("get", {"directory": "in", "recursive": True, "pattern": "x/*"}), [], CTX)
    assert [d.props["file_path"] for d in docs] == ["in/x/y.csv"]


async def test_get_nothing_matching_gives_no_documents(disk: DiskConnector) -> None:
    put(disk, "a.txt", "a")
    assert await disk.get(operation("get", {"pattern": "*.xml"}), [], CTX) == []


async def test_get_skips_young_files_and_temp_files(disk: DiskConnector) -> None:
    put(disk, "old.csv", "o", mtime=1_000)
    put(disk, "new.csv", "n")
    put(disk, ".old.csv.0123abcd.part", "partial", mtime=1_000)
    docs = await disk.get(operation("get", {"min_age": "1h"}), [], CTX)
    assert [d.props["file_name"] for d in docs] == ["old.csv"]


async def test_get_then_delete(disk: DiskConnector) -> None:
    put(disk, "in/a.csv", "a")
    put(disk, "in/b.txt", "b")
    docs = await disk.get(operation("get", {"directory": "in", "pattern": "*.csv", "after": "delete"}), [], CTX)
    assert [d.data for d in docs] == [b"a"]
    assert listing(disk) == ["in/b.txt"]


async def test_get_then_move_keeps_the_subpath_and_never_overwrites(disk: DiskConnector) -> None:
    put(disk, "in/a.csv", "new a")
    put(disk, "in/x/b.csv", "b")
    put(disk, "archive/a.csv", "old a")
    op = operation("get", {"directory": "in", "recursive": True, "after": "move", "move_to": "archive"})
    docs = await disk.get(op, [], CTX)
    assert sorted(d.data for d in docs) == [b"b", b"new a"]
    assert listing(disk) == ["archive/a-1.csv", "archive/a.csv", "archive/x/b.csv"]
    assert (base(disk) / "archive/a.csv").read_text() == "old a"


async def test_get_recursive_does_not_read_its_own_archive(disk: DiskConnector) -> None:
    put(disk, "a.csv", "a")
    put(disk, "done/old.csv", "old")
    op = operation("get", {"recursive": True, "after": "move", "move_to": "done"})
    docs = await disk.get(op, [], CTX)
    assert [d.props["file_path"] for d in docs] == ["a.csv"]
    assert listing(disk) == ["done/a.csv", "done/old.csv"]


async def test_get_per_input_document_renders_templates(disk: DiskConnector) -> None:
    put(disk, "eu/1.json", "{}")
    put(disk, "us/2.json", "{}")
    op = operation("get", {"directory": "{{ doc.props.region }}"})
    docs = await disk.get(op, [Document(b"", {"region": "us"}), Document(b"", {"region": "eu"})], CTX)
    assert [d.props["file_path"] for d in docs] == ["us/2.json", "eu/1.json"]


async def test_get_missing_directory_fails_with_a_clear_message(disk: DiskConnector) -> None:
    doc = Document(b"", {"dir": "nope"})
    [got] = await disk.get(operation("get", {"directory": "{{ doc.props.dir }}"}), [doc], CTX)
    assert got.error is not None
    assert "connection 'files'" in got.error and "disk " in got.error
    assert "get 'nope'" in got.error and "no such file or directory" in got.error


async def test_get_refuses_traversal_in_directory(disk: DiskConnector) -> None:
    with pytest.raises(Exception, match=r"'\.\.' would leave the connection directory"):
        await disk.get(operation("get", {"directory": "../"}), [], CTX)


# ------------------------------------------------------------------------------------------- write

async def test_write_names_from_property_template_or_uuid(disk: DiskConnector) -> None:
    docs = [Document(b"one", {"file_name": "one.txt"}), Document(b'{"id": 7}'), Document(b"anon")]
    out = await disk.send(operation("send", {}), docs[:1], CTX)
    assert out[0].props["file_path"] == "one.txt" and out[0].props["file_size"] == "3"
    out = await disk.send(operation("send", {"file_name": "order-{{ doc.json.id }}.json",
                                             "directory": "out/{{ 'x' }}"}), docs[1:2], CTX)
    assert out[0].props["file_path"] == "out/x/order-7.json"
    out = await disk.send(operation("send", {}), docs[2:], CTX)
    name = out[0].props["file_name"]
    assert len(name) == 36 and (base(disk) / name).read_bytes() == b"anon"
    assert (base(disk) / "out/x/order-7.json").read_bytes() == b'{"id": 7}'
    assert docs[1].props == {}  # inputs are not changed


@pytest.mark.parametrize(("mode", "expect", "content"), [
    ("overwrite", ["a.txt"], {"a.txt": "second"}),
    ("append", ["a.txt"], {"a.txt": "firstsecond"}),
    ("unique", ["a-1.txt", "a.txt"], {"a.txt": "first", "a-1.txt": "second"}),
])
async def test_write_if_exists(disk: DiskConnector, mode: str, expect: list[str], content: dict[str, str]) -> None:
    op = operation("send", {"file_name": "a.txt", "if_exists": mode})
    await disk.send(op, [Document(b"first")], CTX)
    [out] = await disk.send(op, [Document(b"second")], CTX)
    assert out.error is None
    assert listing(disk) == expect
    assert {k: (base(disk) / k).read_text() for k in content} == content


async def test_write_if_exists_fail(disk: DiskConnector) -> None:
    put(disk, "a.txt", "first")
    op = operation("send", {"file_name": "{{ doc.props.n }}", "if_exists": "fail"})
    out = await disk.send(op, [Document(b"x", {"n": "a.txt"}), Document(b"y", {"n": "b.txt"})], CTX)
    assert out[0].error is not None and "write 'a.txt'" in out[0].error and "exists" in out[0].error
    assert out[1].error is None
    assert listing(disk) == ["a.txt", "b.txt"]
    assert (base(disk) / "a.txt").read_text() == "first"


async def test_write_is_atomic(disk: DiskConnector, monkeypatch: pytest.MonkeyPatch) -> None:
    """The content goes to a temp name in the same directory; the final name appears complete."""
    put(disk, "out/a.txt", "old")
    seen: list[tuple[str, str]] = []
    upload = DiskStore._upload

    def spy(self: DiskStore, path: str, data: bytes) -> None:
        seen.append((path, (base(disk) / "out/a.txt").read_text()))
        upload(self, path, data)

    monkeypatch.setattr(DiskStore, "_upload", spy)
    await disk.send(operation("send", {"file_name": "out/a.txt"}), [Document(b"new")], CTX)
    [(temp, during)] = seen
    assert temp.startswith("out/.a.txt.") and temp.endswith(".part")
    assert during == "old"  # the final name still held the old content while writing
    assert listing(disk) == ["out/a.txt"]  # no temp file left
    assert (base(disk) / "out/a.txt").read_text() == "new"


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/etc/passwd", "C:/x", "a\\b", "a\nb", ""])
async def test_write_refuses_traversal(disk: DiskConnector, name: str) -> None:
    [out] = await disk.send(operation("send", {"file_name": "{{ doc.props.n }}"}),
                            [Document(b"x", {"n": name})], CTX)
    assert out.error is not None and "connection 'files'" in out.error
    assert "refused" in out.error or "empty" in out.error
    assert listing(disk) == []
    assert not (base(disk).parent / "evil.txt").exists()


async def test_write_through_a_symlink_out_is_refused(disk: DiskConnector, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (base(disk) / "link").symlink_to(outside)
    [out] = await disk.send(operation("send", {"file_name": "link/x.txt"}), [Document(b"x")], CTX)
    assert out.error is not None and "outside the connection directory" in out.error
    assert list(outside.iterdir()) == []
    (outside / "secret.txt").write_text("s")
    [failed] = await disk.get(operation("get", {"directory": "{{ doc.props.d }}"}), [Document(b"", {"d": "link"})],
                              CTX)
    assert failed.error is not None and "outside the connection directory" in failed.error


# ------------------------------------------------------------------------------------------- list, move, delete

async def test_list_gives_metadata_without_content(disk: DiskConnector) -> None:
    put(disk, "in/a.csv", "abc", mtime=1_700_000_000)
    put(disk, "in/b.txt", "b")
    trigger = Document(b"")
    docs = await disk.send(operation("send", {"action": "list", "directory": "in", "pattern": "*.csv"}),
                           [trigger], CTX)
    assert len(docs) == 1
    assert json.loads(docs[0].data) == {"file_name": "a.csv", "file_path": "in/a.csv", "file_size": 3,
                                        "file_mtime": "2023-11-14T22:13:20+00:00"}
    assert docs[0].props["file_path"] == "in/a.csv"
    assert listing(disk) == ["in/a.csv", "in/b.txt"]


async def test_move_and_delete_after_get(disk: DiskConnector) -> None:
    put(disk, "in/a.csv", "a")
    put(disk, "in/b.csv", "b")
    docs = await disk.get(operation("get", {"directory": "in"}), [], CTX)
    moved = await disk.send(operation("send", {"action": "move", "move_to": "done/{{ 'today' }}"}), docs[:1], CTX)
    assert moved[0].error is None and moved[0].props["file_path"] == "done/today/a.csv"
    renamed = await disk.send(operation("send", {"action": "move", "new_name": "{{ doc.props.file_name }}.ok"}),
                              docs[1:], CTX)
    assert renamed[0].props["file_path"] == "in/b.csv.ok"
    assert listing(disk) == ["done/today/a.csv", "in/b.csv.ok"]
    deleted = await disk.send(operation("send", {"action": "delete"}), moved, CTX)
    assert deleted[0].error is None
    assert listing(disk) == ["in/b.csv.ok"]


async def test_move_and_delete_missing_files(disk: DiskConnector) -> None:
    doc = Document(b"", {"file_path": "gone.csv"})
    [out] = await disk.send(operation("send", {"action": "delete"}), [doc], CTX)
    assert out.error is not None and "delete 'gone.csv'" in out.error
    [out] = await disk.send(operation("send", {"action": "delete", "if_missing": "ignore"}),
                            [Document(b"", {"file_path": "gone.csv"})], CTX)
    assert out.error is None
    [out] = await disk.send(operation("send", {"action": "move", "move_to": "x", "if_missing": "ignore"}),
                            [Document(b"", {"file_path": "gone.csv"})], CTX)
    assert out.error is None
    [out] = await disk.send(operation("send", {"action": "delete"}), [Document(b"")], CTX)
    assert out.error is not None and "file_path" in out.error


async def test_move_if_exists_fail_keeps_both(disk: DiskConnector) -> None:
    put(disk, "a.csv", "a")
    put(disk, "done/a.csv", "old")
    [out] = await disk.send(operation("send", {"action": "move", "move_to": "done", "if_exists": "fail",
                                               "file_name": "a.csv"}), [Document(b"")], CTX)
    assert out.error is not None and "exists" in out.error
    assert listing(disk) == ["a.csv", "done/a.csv"]


async def test_move_target_traversal_refused(disk: DiskConnector) -> None:
    put(disk, "a.csv", "a")
    [out] = await disk.send(operation("send", {"action": "move", "move_to": "../../elsewhere", "file_name": "a.csv"}),
                            [Document(b"")], CTX)
    assert out.error is not None and "refused" in out.error
    assert listing(disk) == ["a.csv"]


# ------------------------------------------------------------------------------------------- load-time checks

def test_operation_checks() -> None:
    assert problems("get", {"after": "move"}) == ["'after: move' needs 'move_to' (the directory files go to)"]
    assert problems("get", {"move_to": "x"}) == ["'move_to' is only used with 'after: move'"]
    assert problems("send", {"pattern": "*.csv"}) == ["field 'pattern' does not apply to action 'write'"]
    assert problems("send", {"action": "move"}) == ["action 'move' needs 'move_to', 'new_name' or both"]
    assert problems("send", {"action": "move", "move_to": "x", "if_exists": "append"}) == [
        "'if_exists: append' does not apply to action 'move'"]
    assert problems("send", {"if_exists": "replace"})[0].startswith("'replace' is not one of overwrite")


def test_every_field_is_documented() -> None:
    for spec in [DiskConnector.connection_spec, *DiskConnector.operations.values()]:
        for f in spec.fields:
            assert f.description and f.example is not None, f.name


async def test_template_errors_name_the_connection(disk: DiskConnector) -> None:
    [out] = await disk.send(operation("send", {"file_name": "{{ doc.json.id }}.json"}), [Document(b"not json")], CTX)
    assert out.error is not None and out.error.startswith("connection 'files' (disk ")
    assert ": write: " in out.error and "not valid JSON" in out.error
    with pytest.raises(Exception, match=r"^connection 'files' \(disk .*\): get: .*doc"):
        await disk.get(operation("get", {"directory": "{{ doc.props.dir }}"}), [], CTX)


def test_the_docs_describe_every_field() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "connectors" / "disk.md").read_text()
    for spec in [DiskConnector.connection_spec, *DiskConnector.operations.values()]:
        for f in spec.fields:
            assert f"| `{f.name}` |" in doc, f.name
