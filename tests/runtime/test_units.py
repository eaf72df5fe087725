"""Building blocks of the runtime on their own: eager starts, document and response framing, the rate
limiter, the listener table, purity of processes."""

from __future__ import annotations

import asyncio

import pytest

from atom.document import Document
from atom.loader import load_sources
from atom.runtime import runs_without_io, start_eagerly
from atom.store import frame_documents, frame_response, unframe_documents, unframe_response
from atom.web_http import HttpResult, parse_max_wait
from atom.web_listeners import InputError, RateLimiter, read_documents


async def test_start_eagerly_runs_to_the_end_without_a_task() -> None:
    seen = []

    async def quick() -> None:
        seen.append(1)

    assert start_eagerly(quick()) is None
    assert seen == [1]


async def test_start_eagerly_carries_on_in_a_task_after_a_suspension() -> None:
    seen = []

    async def slow() -> None:
        seen.append("before")
        await asyncio.sleep(0.01)
        seen.append("after")

    task = start_eagerly(slow())
    assert task is not None and seen == ["before"]
    await task
    assert seen == ["before", "after"]


async def test_start_eagerly_forwards_cancellation() -> None:
    seen = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    task = start_eagerly(slow())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]


def test_document_and_response_framing() -> None:
    docs = [(b'{"a": 1}', {"k": "v"}), (b"", {}), (bytes(range(256)), {"bin": "yes"})]
    assert unframe_documents(frame_documents(docs)) == docs
    assert unframe_documents(b"") == []
    body = b'{"a": 1}'
    r = HttpResult(201, {"X-A": "1"}, body)
    same = frame_response(r, body)
    assert len(same) < len(frame_response(r, None))
    assert unframe_response(same, frame_documents([(body, {})])) == r
    other = HttpResult(200, {}, b"[1,2]")
    assert unframe_response(frame_response(other, b"[1,2]"[:1]), None) == other


def test_rate_limiter_token_bucket() -> None:
    rl = RateLimiter({"requests": 2, "per": 1.0, "by": "client"})
    assert rl.wait("p", "a") == 0 and rl.wait("p", "a") == 0
    wait = rl.wait("p", "a")
    assert 0 < wait <= 1.0
    assert rl.wait("p", "b") == 0  # another client has its own bucket
    assert rl.wait("q", "a") == 0  # and so has another listener
    shared = RateLimiter({"requests": 1, "per": 60.0, "by": "listener"})
    assert shared.wait("p", "a") == 0 and shared.wait("p", "b") > 0


def test_read_documents() -> None:
    assert [d.data for d in read_documents("json_multiple", b'[{"a":1},2]', {})] == [b'{"a":1}', b"2"]
    assert [d.data for d in read_documents("json_multiple", b'{"a":1}', {})] == [b'{"a":1}']
    assert [d.data for d in read_documents("xml_multiple", b"<r><a/>text<b x='1'/></r>", {})] == [b"<a/>text",
                                                                                                  b'<b x="1"/>']
    docs = read_documents("data", b"raw", {"inheader_X": "1"})
    assert docs[0].props == {"inheader_X": "1"} and docs[0].data == b"raw"
    with pytest.raises(InputError):
        read_documents("json", b"{", {})
    with pytest.raises(InputError):
        read_documents("xml", b"", {})
    assert isinstance(read_documents("json", b"null", {})[0], Document)


def test_parse_max_wait() -> None:
    assert parse_max_wait(None, 180000, 180000) == 180.0
    assert parse_max_wait("250", 180000, 0) == 0.25
    assert parse_max_wait("999999999", 1000, 0) == 1.0
    for bad in ("x", "-1", "1.5"):
        with pytest.raises(ValueError):
            parse_max_wait(bad, 1000, 0)


def test_runs_without_io() -> None:
    dep = load_sources([
        ("c.yaml", "connection: c\ntype: test\n"),
        ("pure.yaml", "process: pure\nshapes:\n  - {id: m, message: {template: x}}\n  - {id: r, return: {}}\n"),
        ("io.yaml", "process: io\nshapes:\n  - {id: k, connector: {connection: c, action: send}}\n"),
        ("calls-pure.yaml", "process: calls-pure\nshapes:\n  - {id: p, process_call: {process: pure}}\n"),
        ("calls-io.yaml", "process: calls-io\nshapes:\n  - {id: p, process_call: {process: io}}\n"),
        ("pull.yaml", "process: pull\nstart: {connector: {connection: c}}\nshapes:\n  - {id: r, return: {}}\n"),
    ])
    got = {name: runs_without_io(p, dep) for name, p in dep.processes.items()}
    assert got == {"pure": True, "io": False, "calls-pure": True, "calls-io": False, "pull": False}
