"""The disk connector against a real temporary directory."""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from atom.connector import OperationContext
from atom.document import Document
from atom.errors import DocumentError
from atom.spec import CheckContext, Spec
from atom.yamlio import Where
from connectors.disk import DiskConnector, DiskStore
from connectors.disk._staging import Stage

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
    assert got.error_kind == "rejected"  # the peer (here the file system) refused this request


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
    assert out.error_kind == "invalid"
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


# ------------------------------------------------------------------------------------------- large files

def records(path: Path, n: int, payload: int = 1000) -> bytes:
    """An XML file of `n` records of about `payload` bytes each; returns its content."""
    rec = "<Record><Id>{}</Id><Text>" + "x" * payload + "</Text></Record>\n"
    data = ("<Root>\n" + "".join(rec.format(i) for i in range(n)) + "</Root>\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def staged(conn: DiskConnector) -> list[str]:
    """The files in the staging directory, owner lock files aside."""
    return [p for p in listing(conn) if p.startswith(".atom-staging/") and not p.endswith("/lock")]


def deploy(tmp_path: Path, operation: str, *shapes: str) -> Any:
    """A connection `files` on tmp_path/data and a process `p` starting with a get of `operation`."""
    from atom.loader import load_directory

    comps = tmp_path / "components"
    comps.mkdir(exist_ok=True)
    (comps / "files.yaml").write_text(f"connection: files\ntype: disk\ndirectory: {tmp_path / 'data'}\n")
    (comps / "sink.yaml").write_text("connection: sink\ntype: test\ndelay: 30s\n")
    body = "\n".join(f"  - {s}" for s in shapes)
    (comps / "p.yaml").write_text(f"process: p\nstart:\n  connector:\n    connection: files\n"
                                  f"    operation: {operation}\nshapes:\n{body}\n")
    return load_directory(comps)


def execute(dep: Any, **kw: Any) -> Any:
    from atom.engine import Engine

    async def go() -> Any:
        eng = Engine(dep)
        try:
            return await eng.execute("p", **kw)
        finally:
            await eng.stop()

    return asyncio.run(go())


def files_below(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.name != "lock")


def test_a_large_file_is_split_as_it_is_read(tmp_path: Path) -> None:
    """30 MB picked up by get and split by XPath: the file is never held whole (a full read alone would
    allocate its 30 MB), every record comes out, and the file stays (after: keep)."""
    src = tmp_path / "data" / "in" / "big.xml"
    n = 30_000
    size = len(records(src, n))
    assert size > 30_000_000
    dep = deploy(tmp_path, "{directory: in}", "{id: sp, split: {xpath: /Root/Record}}")
    tracemalloc.start()
    try:
        ex = execute(dep)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ex.status == "COMPLETE", ex.message
    assert ex.shape_stats["sp"].docs_out == n
    assert peak < size // 4, peak
    assert files_below(tmp_path / "data") == ["in/big.xml"]  # the staged link is gone


@pytest.mark.parametrize("after", ["delete", "move"])
def test_after_delete_or_move_with_a_large_file(tmp_path: Path, after: str) -> None:
    data = records(tmp_path / "data" / "in" / "big.xml", 2_000)
    (tmp_path / "data" / "done").mkdir()
    (tmp_path / "data" / "done" / "big.xml").write_text("an older file")
    seen: list[Any] = []

    def hook(docs: list[Document]) -> list[Document]:  # between get and split
        seen.append(([d.props for d in docs], files_below(tmp_path / "data"), type(docs[0]) is not Document))
        return docs

    op = f"{{directory: in, after: {after}, move_to: done, stream_threshold: 1MiB}}" if after == "move" \
        else "{directory: in, after: delete, stream_threshold: 1MiB}"
    dep = deploy(tmp_path, op, "{id: hook, set_properties: {document: {x: y}}}", "{id: sp, split: {xpath: /Root/Record}}",
                 "{id: r, return: {}}")
    ex = execute(dep, mocks={"hook": hook})
    assert ex.status == "COMPLETE", ex.message
    assert len(ex.returned) == 2_000 and ex.returned[-1].xml.findtext("Id") == "1999"
    [(props, during, streamed)] = seen
    assert streamed and props[0]["file_path"] == "in/big.xml" and props[0]["file_size"] == str(len(data))
    # while the execution runs, the file has left the inbound directory for the staging directory
    assert [p for p in during if not p.startswith(".atom-staging/")] == ["done/big.xml"]
    assert len([p for p in during if p.startswith(".atom-staging/") and not p.endswith(".json")]) == 1
    if after == "delete":
        assert files_below(tmp_path / "data") == ["done/big.xml"]
    else:  # moved once the execution ended; a taken name gets a suffix
        assert files_below(tmp_path / "data") == ["done/big-1.xml", "done/big.xml"]
        assert (tmp_path / "data" / "done" / "big-1.xml").read_bytes() == data


async def test_file_documents_have_the_properties_of_read_ones(disk: DiskConnector) -> None:
    put(disk, "in/a.xml", "<a/>" * 100, mtime=1_700_000_000)
    [read] = await disk.get(operation("get", {"directory": "in"}), [], CTX)
    [streamed] = await disk.get(operation("get", {"directory": "in", "stream_threshold": 400}), [], CTX)
    assert type(read) is Document and type(streamed) is not Document
    assert streamed.props == read.props == {"file_name": "a.xml", "file_path": "in/a.xml", "file_size": "400",
                                             "file_mtime": "2023-11-14T22:13:20+00:00"}
    assert streamed.size == read.size == 400 and streamed.data == read.data
    assert operation("get", {"stream_threshold": "64MiB"})["stream_threshold"] == 64 * 1024 * 1024


async def test_small_files_are_read_into_memory_as_before(disk: DiskConnector) -> None:
    put(disk, "in/a.csv", "a")
    put(disk, "in/b.csv", "b")
    op = operation("get", {"directory": "in", "after": "move", "move_to": "done"})
    assert op["stream_threshold"] == 8 * 1024 * 1024
    docs = await disk.get(op, [], CTX)
    assert [type(d) for d in docs] == [Document, Document] and [d.data for d in docs] == [b"a", b"b"]
    assert listing(disk) == ["done/a.csv", "done/b.csv"]  # moved at once; nothing staged
    assert not (base(disk) / ".atom-staging").exists()


async def test_a_staged_file_lives_as_long_as_a_document_refers_to_it(disk: DiskConnector) -> None:
    put(disk, "in/a.csv", "1\n2\n")
    put(disk, "keep.csv", "k")
    docs = await disk.get(operation("get", {"directory": "in", "after": "delete", "stream_threshold": 1}), [], CTX)
    assert listing(disk) == [f".atom-staging/{disk.stage().name}/{f}" for f in ("1-a.csv", "1.json", "lock")] \
        + ["keep.csv"]
    # a recursive get or list never sees the staging directory
    got = await disk.get(operation("get", {"recursive": True}), [], CTX)
    assert [d.props["file_path"] for d in got] == ["keep.csv"]
    copy = docs[0].copy()
    del docs
    gc.collect()
    assert len(staged(disk)) == 2  # the copy still reads it
    assert copy.text == "1\n2\n"
    del copy
    gc.collect()
    assert staged(disk) == [] and listing(disk)[-1:] == ["keep.csv"]
    await disk.stop()
    assert listing(disk) == ["keep.csv"]


async def test_a_copy_of_a_streamed_document_checks_its_file_too(disk: DiskConnector) -> None:
    put(disk, "in/a.csv", "1\n2\n")
    docs = await disk.get(operation("get", {"directory": "in", "stream_threshold": 1}), [], CTX)
    copy = docs[0].copy()  # as branch and try_catch make them
    assert type(copy) is type(docs[0]) and copy.props == docs[0].props
    with open(base(disk) / "in" / "a.csv", "wb") as f:  # rewritten in place by its writer
        f.write(b"changed, and longer\n")
    with pytest.raises(DocumentError, match="the file was changed after get picked it up"):
        copy.data  # noqa: B018


def test_a_file_changed_or_removed_after_get_fails_with_a_located_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "data" / "in" / "o.xml"
    shapes = ("{id: hook, set_properties: {document: {x: y}}}", "{id: sp, split: {xpath: /Root/Record}}")

    def run(op: str, act: Any) -> Any:
        records(src, 3, payload=10)
        os.utime(src, (1_700_000_000, 1_700_000_000))
        return execute(deploy(tmp_path, op, *shapes), mocks={"hook": lambda docs: (act(docs), docs)[1]})

    def change(docs: list[Document]) -> None:  # rewritten in place by its writer
        with open(src, "wb") as f:
            f.write(b"<Root><Record>changed</Record></Root>")

    ex = run("{directory: in, stream_threshold: 1}", change)
    assert ex.status == "ERROR"
    assert ex.message.startswith(f"split 'sp': connection 'files' (disk {tmp_path / 'data'}): read 'in/o.xml': "
                                 "the file was changed after get picked it up")
    assert ex.shape_stats["sp"].docs_out == 0

    # after: keep reads a hard link: the file removed (or replaced) by its writer is still read whole
    ex = run("{directory: in, stream_threshold: 1}", lambda docs: src.unlink())
    assert ex.status == "COMPLETE" and ex.shape_stats["sp"].docs_out == 3
    assert files_below(tmp_path / "data") == []

    # a staged file removed from under the execution
    def remove_staged(docs: list[Document]) -> None:
        for p in (tmp_path / "data" / ".atom-staging").rglob("1-o.xml"):
            p.unlink()

    ex = run("{directory: in, after: delete, stream_threshold: 1}", remove_staged)
    assert ex.status == "ERROR" and "read 'in/o.xml': the file is gone" in ex.message

    # without hard links, after: keep reads the file in place
    def no_link(*args: Any, **kw: Any) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    ex = run("{directory: in, stream_threshold: 1}", lambda docs: src.unlink())
    assert ex.status == "ERROR"
    assert ex.message.startswith("split 'sp': connection 'files' (disk ") and "read 'in/o.xml': the file is gone" \
        in ex.message
    assert files_below(tmp_path / "data") == []


def test_an_execution_that_does_not_finish_puts_the_file_back(tmp_path: Path) -> None:
    from atom.engine import Engine

    data = records(tmp_path / "data" / "in" / "o.xml", 3, payload=10)
    dep = deploy(tmp_path, "{directory: in, after: delete, stream_threshold: 1}", "{id: k, connector: {connection: sink}}")

    async def go() -> str:
        eng = Engine(dep)
        ex = eng.new_execution("p")
        task = asyncio.ensure_future(eng.run(ex))
        while not any(p.name == "1-o.xml" for p in (tmp_path / "data").rglob("*")):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # in the sink's delay
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await eng.stop()
        return ex.status

    assert asyncio.run(go()) == "ABORTED"
    gc.collect()
    assert files_below(tmp_path / "data") == ["in/o.xml"]
    assert (tmp_path / "data" / "in" / "o.xml").read_bytes() == data


RECOVERY = """
import asyncio, os, sys
from connectors.disk import DiskConnector
from tests.connectors.test_disk import CTX, operation

async def main():
    conn = DiskConnector("files", {"directory": sys.argv[1]})
    await conn.start()
    op = {"directory": "in", "after": sys.argv[2], "stream_threshold": 1}
    if sys.argv[2] == "move":
        op["move_to"] = "done"
    docs = await conn.get(operation("get", op), [], CTX)
    assert len(docs) == 1
    os._exit(0)  # the Atom stops before its execution ended

asyncio.run(main())
"""


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
@pytest.mark.parametrize("after", ["delete", "move", "keep"])
async def test_files_staged_by_an_atom_that_stopped_are_put_back(tmp_path: Path, after: str) -> None:
    root = tmp_path / "data"
    data = records(root / "in" / "o.xml", 3, payload=10)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", RECOVERY, str(root), after, env=env)
    assert await proc.wait() == 0
    left = files_below(root)
    assert len([p for p in left if p.startswith(".atom-staging/")]) == 2  # the file (or link) and its manifest
    assert [p for p in left if not p.startswith(".atom-staging/")] == (["in/o.xml"] if after == "keep" else [])
    conn = DiskConnector("files", {"directory": str(root)})
    await conn.start()  # recovers
    assert files_below(root) == ["in/o.xml"] and (root / "in" / "o.xml").read_bytes() == data
    [doc] = await conn.get(operation("get", {"directory": "in", "after": "delete"}), [], CTX)
    assert doc.data == data
    await conn.stop()


async def test_without_a_staging_directory_large_files_are_read_as_before(
        disk: DiskConnector, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(self: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Stage, "_open", refused)
    put(disk, "in/a.csv", "1\n2\n")
    [kept] = await disk.get(operation("get", {"directory": "in", "stream_threshold": 1}), [], CTX)
    assert type(kept) is not Document and kept.text == "1\n2\n"  # read in place
    [deleted] = await disk.get(operation("get", {"directory": "in", "after": "delete", "stream_threshold": 1}), [],
                               CTX)
    assert type(deleted) is Document and deleted.data == b"1\n2\n"
    assert listing(disk) == []


async def test_a_get_cancelled_while_staging_puts_the_file_back(
        disk: DiskConnector, monkeypatch: pytest.MonkeyPatch) -> None:
    put(disk, "in/a.csv", "1\n2\n")
    take = Stage.take
    started, finished = threading.Event(), threading.Event()

    def slow(self: Stage, *args: Any) -> Any:
        started.set()
        time.sleep(0.2)
        try:
            return take(self, *args)
        finally:
            finished.set()

    monkeypatch.setattr(Stage, "take", slow)
    task = asyncio.ensure_future(disk.get(operation("get", {"directory": "in", "after": "delete",
                                                            "stream_threshold": 1}), [], CTX))
    await asyncio.to_thread(started.wait)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(finished.wait)  # the file was staged all the same ...
    for _ in range(100):
        await asyncio.sleep(0.01)
        if not staged(disk):
            break
    assert staged(disk) == [] and (base(disk) / "in/a.csv").read_text() == "1\n2\n"  # ... and put back
