"""Retries, Retry-After, timeouts, connection resets and the circuit breaker of the http connector,
against real aiohttp upstream servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from atom import metrics
from atom.document import Document
from tests.connectors.test_http import Recorder, Starter, connection, operation, running, upstream
from tests.services import free_port


@pytest.fixture
async def started() -> AsyncIterator[Starter]:
    async with running() as start:
        yield start


class Script:
    """An upstream that answers from a list of statuses (then 200), counting calls and their times."""

    def __init__(self, *answers: int | tuple[int, dict[str, str]], gauge: str = "") -> None:
        self.answers = list(answers)
        self.times: list[float] = []
        self.gauge = gauge
        self.gauges: list[float | None] = []  # breaker state of connection `gauge` during each call

    async def handle(self, request: web.Request) -> web.Response:
        self.times.append(asyncio.get_running_loop().time())
        if self.gauge:
            self.gauges.append(breaker_gauge(self.gauge))
        if not self.answers:
            return web.Response(text="fine")
        answer = self.answers.pop(0)
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        return web.Response(status=status, text=f"status {status}", headers=headers)

    @property
    def calls(self) -> int:
        return len(self.times)

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


def retrying(url: str, attempts: int = 3, backoff: str = "50ms", jitter: float = 0.0, **more: Any) -> dict[str, Any]:
    return {"url": url, "retry": {"attempts": attempts, "backoff": backoff, "max_backoff": "1s",
                                  "jitter": jitter}, **more}


def retries_of(name: str) -> float:
    return metrics.REGISTRY.get_sample_value("atom_connector_retries_total", {"connection": name}) or 0.0


def calls_of(name: str, outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value("atom_connector_calls_total",
                                             {"connection": name, "outcome": outcome}) or 0.0


def breaker_gauge(name: str) -> float | None:
    return metrics.REGISTRY.get_sample_value("atom_circuit_breaker_state", {"connection": name})


async def test_503s_then_200_are_retried_with_exponential_backoff(aiohttp_server: Any, started: Any) -> None:
    script = Script(503, 503)
    url = await upstream(aiohttp_server, {"POST /x": script.handle})
    conn = await started(connection(retrying(url), name="r503"))
    before = retries_of("r503")
    ctx = Recorder()
    [out] = await conn.send(operation("send", {"path": "/x"}), [Document(b"{}")], ctx)
    assert out.error is None and out.text == "fine"
    assert script.calls == 3
    gap1, gap2 = script.gaps()
    assert 0.045 <= gap1 < 0.5 and 0.095 <= gap2 < 0.8  # 50 ms, then 100 ms
    assert retries_of("r503") - before == 2
    assert [lv for lv, _ in ctx.lines] == ["warning", "warning"]
    assert ctx.lines[0][1].startswith(f"connection 'r503': attempt 1 failed (POST {url}/x answered 503 "
                                      "Service Unavailable: status 503); retrying in 0.050s")


async def test_jitter_spreads_the_delays(aiohttp_server: Any, started: Any) -> None:
    script = Script(500, 500, 500)
    url = await upstream(aiohttp_server, {"POST /x": script.handle})
    conn = await started(connection(retrying(url, attempts=4, backoff="40ms", jitter=0.5), name="rjit"))
    [out] = await conn.send(operation("send", {"path": "/x"}), [Document(b"{}")], Recorder())
    assert out.error is None and script.calls == 4
    for n, gap in enumerate(script.gaps()):
        base = 0.04 * 2 ** n
        assert base * 0.5 - 0.005 <= gap < base * 1.5 + 0.4


async def test_attempts_run_out(aiohttp_server: Any, started: Any) -> None:
    script = Script(502, 503, (504, {"X-Trace": "t9"}), 500)
    url = await upstream(aiohttp_server, {"POST /x": script.handle})
    conn = await started(connection(retrying(url, backoff="10ms"), name="rout"))
    errors_before = calls_of("rout", "error")
    [out] = await conn.send(operation("send", {"path": "/x"}), [Document(b"in")], Recorder())
    assert script.calls == 3
    assert out.error == (f"connection 'rout': POST {url}/x answered 504 Gateway Timeout: status 504 "
                         "(after 3 attempts)")
    assert out.props["status_code"] == "504" and out.props["header_X-Trace"] == "t9"
    assert (out.error_kind, out.error_status) == ("status", 504)  # the last attempt's
    assert out.data == b"in"
    assert calls_of("rout", "error") - errors_before == 1


async def test_429_honours_retry_after(aiohttp_server: Any, started: Any) -> None:
    script = Script((429, {"Retry-After": "1"}))
    url = await upstream(aiohttp_server, {"GET /x": script.handle})
    conn = await started(connection(retrying(url, backoff="10ms"), name="r429"))
    ctx = Recorder()
    [out] = await conn.get(operation("get", {"path": "/x"}), [], ctx)
    assert out.error is None and script.calls == 2
    assert 0.95 <= script.gaps()[0] < 2.5  # Retry-After wins over the 10 ms back-off
    assert "answered 429 Too Many Requests (Retry-After: 1s)" in ctx.lines[0][1]
    assert "retrying in 1.000s" in ctx.lines[0][1]


async def test_retry_after_longer_than_allowed_fails_at_once(aiohttp_server: Any, started: Any) -> None:
    script = Script((503, {"Retry-After": "120"}))
    url = await upstream(aiohttp_server, {"GET /x": script.handle})
    conn = await started(connection({**retrying(url), "retry": {"max_retry_after": "5s"}}, name="rlong"))
    [out] = await conn.get(operation("get", {"path": "/x"}), [], Recorder())
    assert script.calls == 1
    assert out.error == f"connection 'rlong': GET {url}/x answered 503 Service Unavailable (Retry-After: 120s): " \
                        "status 503"


async def test_400_and_404_are_never_retried_and_keep_the_breaker_closed(aiohttp_server: Any,
                                                                          started: Any) -> None:
    script = Script(*([400] * 3 + [404] * 3))
    url = await upstream(aiohttp_server, {"POST /x": script.handle})
    conn = await started(connection(retrying(url, circuit_breaker={"failure_threshold": 2}), name="r4xx"))
    op = operation("send", {"path": "/x"})
    out = await conn.send(op, [Document(b"{}") for _ in range(6)], Recorder())
    assert script.calls == 6
    assert [d.props["status_code"] for d in out] == ["400"] * 3 + ["404"] * 3
    assert all(d.error and "(after" not in d.error for d in out)
    assert [(d.error_kind, d.error_status) for d in out] == [("rejected", 400)] * 3 + [("status", 404)] * 3
    assert conn.breaker.state == "closed"


async def test_slow_answers_time_out_and_are_retried(aiohttp_server: Any, started: Any) -> None:
    hits = 0
    release = asyncio.Event()

    async def stuck(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        await asyncio.wait_for(release.wait(), 5)  # answers only when the test is done
        return web.Response(text="late")

    async def slowish(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return web.Response(text="slow but fine")

    url = await upstream(aiohttp_server, {"GET /stuck": stuck, "GET /slowish": slowish})
    conn = await started(connection(retrying(url, attempts=2, backoff="10ms", timeout="100ms"), name="rslow"))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    [out] = await conn.get(operation("get", {"path": "/stuck"}), [], Recorder())
    elapsed = loop.time() - t0
    release.set()
    assert hits == 2
    assert out.error == f"connection 'rslow': GET {url}/stuck: no answer within 0.1s (after 2 attempts)"
    assert (out.error_kind, out.error_status) == ("timeout", None)
    assert 0.2 <= elapsed < 2.0  # two 100 ms timeouts and a 10 ms pause

    [late] = await conn.get(operation("get", {"path": "/slowish"}), [], Recorder())
    assert late.error is not None and "no answer within 0.1s" in late.error
    [ok] = await conn.get(operation("get", {"path": "/slowish", "timeout": "2s"}), [], Recorder())
    assert ok.text == "slow but fine"  # the operation may allow more time


async def test_connection_resets_are_retried(aiohttp_server: Any, started: Any) -> None:
    hits = 0

    async def reset(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        if hits <= 2:
            assert request.transport is not None
            request.transport.abort()  # drop the connection without an answer
            await asyncio.sleep(0.05)
        return web.Response(text="third time lucky")

    url = await upstream(aiohttp_server, {"POST /r": reset})
    conn = await started(connection(retrying(url, backoff="10ms"), name="rreset"))
    ctx = Recorder()
    [out] = await conn.send(operation("send", {"path": "/r"}), [Document(b"x")], ctx)
    assert out.error is None and out.text == "third time lucky"
    assert hits == 3
    assert all(f"POST {url}/r: network error: " in msg for _, msg in ctx.lines)


async def test_refused_connection_fails_after_the_attempts(started: Any) -> None:
    port = free_port()  # nothing listens there
    conn = await started(connection(retrying(f"http://127.0.0.1:{port}", attempts=2, backoff="10ms"),
                                    name="rrefused"))
    [out] = await conn.send(operation("send", {"path": "/x"}), [Document(b"x")], Recorder())
    assert out.error is not None
    assert out.error.startswith(f"connection 'rrefused': POST http://127.0.0.1:{port}/x: network error: "
                                f"Cannot connect to host 127.0.0.1:{port}")
    assert out.error.endswith("(after 2 attempts)")
    assert (out.error_kind, out.error_status) == ("unreachable", None)


async def test_circuit_breaker_closed_open_half_open_closed(aiohttp_server: Any, started: Any) -> None:
    name = "rbreaker"
    script = Script(503, 503, 503, gauge=name)
    url = await upstream(aiohttp_server, {"POST /x": script.handle})
    conn = await started(connection(retrying(url, attempts=1, circuit_breaker={
        "failure_threshold": 2, "reset_timeout": "300ms"}), name=name))
    op = operation("send", {"path": "/x"})
    ctx = Recorder()
    assert conn.breaker.state == "closed" and breaker_gauge(name) == 0

    first = await conn.send(op, [Document(b"1"), Document(b"2")], ctx)
    assert [d.props["status_code"] for d in first] == ["503", "503"]
    assert [(d.error_kind, d.error_status) for d in first] == [("status", 503)] * 2
    assert conn.breaker.state == "open" and breaker_gauge(name) == 2
    assert ctx.lines[-1] == ("warning", f"connection '{name}': circuit breaker closed -> open after 2 failed "
                                        "call(s); calls fail at once for 0.3s")

    [rejected] = await conn.send(op, [Document(b"3")], ctx)
    assert script.calls == 2  # the upstream was not called
    assert rejected.error is not None
    assert rejected.error.startswith(f"connection '{name}': POST {url}/x: circuit breaker is open (next trial in")
    assert (rejected.error_kind, rejected.error_status) == ("unavailable", None)

    await asyncio.sleep(0.35)
    [trial] = await conn.send(op, [Document(b"4")], ctx)  # the trial fails: open again
    assert trial.props["status_code"] == "503" and breaker_gauge(name) == 2

    await asyncio.sleep(0.35)
    [ok] = await conn.send(op, [Document(b"5")], ctx)  # the trial succeeds: closed
    assert ok.error is None and ok.text == "fine"
    assert conn.breaker.state == "closed" and breaker_gauge(name) == 0
    assert script.gauges == [0, 0, 1, 1]  # the trial calls ran half-open
    transitions = [msg.split("circuit breaker ", 1)[1].split(" after")[0] for _, msg in ctx.lines
                   if "circuit breaker" in msg and "->" in msg]
    assert transitions == ["closed -> open", "open -> half_open", "half_open -> open", "open -> half_open",
                           "half_open -> closed"]


async def test_breaker_opening_during_retries_keeps_the_real_error(aiohttp_server: Any, started: Any) -> None:
    script = Script(500, 500, 500)
    url = await upstream(aiohttp_server, {"POST /x": script.handle})
    conn = await started(connection(retrying(url, attempts=3, backoff="10ms",
                                             circuit_breaker={"failure_threshold": 2}), name="rmid"))
    [out] = await conn.send(operation("send", {"path": "/x"}), [Document(b"x")], Recorder())
    assert script.calls == 2
    assert out.error is not None
    assert out.error.startswith(f"connection 'rmid': POST {url}/x answered 500 Internal Server Error: status 500 "
                                "(after 2 attempts; then the circuit breaker is open")
    assert out.props["status_code"] == "500"
    assert (out.error_kind, out.error_status) == ("unavailable", 500)


async def test_a_cancelled_trial_call_does_not_wedge_the_breaker(aiohttp_server: Any, started: Any) -> None:
    gate = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        if request.query.get("fail"):
            return web.Response(status=500)
        await asyncio.wait_for(gate.wait(), 2)
        return web.Response(text="ok")

    url = await upstream(aiohttp_server, {"POST /x": hang})
    conn = await started(connection(retrying(url, attempts=1, circuit_breaker={
        "failure_threshold": 1, "reset_timeout": "100ms"}), name="rcancel"))
    await conn.send(operation("send", {"path": "/x", "query": {"fail": "1"}}), [Document(b"x")], Recorder())
    assert conn.breaker.state == "open"
    await asyncio.sleep(0.12)
    call = asyncio.create_task(conn.send(operation("send", {"path": "/x"}), [Document(b"x")], Recorder()))
    await asyncio.sleep(0.05)
    call.cancel()  # e.g. the execution was stopped while the trial call was in flight
    try:
        await call
    except asyncio.CancelledError:
        pass
    gate.set()
    assert conn.breaker.state == "open"  # counted as a failure, not stuck half-open
    await asyncio.sleep(0.12)
    [ok] = await conn.send(operation("send", {"path": "/x"}), [Document(b"x")], Recorder())
    assert ok.error is None and conn.breaker.state == "closed"
