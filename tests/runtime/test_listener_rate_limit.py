"""Per-listener rate limits (`start.listen.rate_limit`) and the listener usage counters, through a real
aiohttp server: buckets by client, user or listener, burst, the 429 and X-RateLimit-* headers, 401
before 429, the server-wide limit on top, buckets kept or reset by a hot reload, load-time errors."""

from __future__ import annotations

import asyncio
import base64
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from atom import metrics, web_listeners
from atom.errors import LoadError
from atom.loader import load_directory
from atom.web_listeners import ListenerRateLimit

from .conftest import Atom, MakeAtom

LIMITED = """
process: {name}
start:
  listen:
    rest: {{method: GET, path: "/{name}"}}
    input: none
    output: json
    rate_limit: {limit}
{auth}shapes:
  - {{id: m, message: {{template: '{{"user": {{{{ process.inuser | default("") | tojson }}}}, "v": {version}}}'}}}}
  - {{id: r, return: {{}}}}
"""

BASIC = "    auth: {type: basic, users: {alice: a-pw, bob: b-pw}}\n"
KEYS = "    auth: {type: api_key, keys: {acme: acme-key, globex: globex-key}}\n"


def limited(name: str, limit: str, auth: str = "", version: int = 1) -> str:
    return LIMITED.format(name=name, limit=limit, auth=auth, version=version)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
async def other_client() -> AsyncIterator[aiohttp.ClientSession]:
    """A client whose connections come from 127.0.0.2 (another loopback address, another client)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as s:
        yield s


async def get(atom: Atom, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    resp = await atom.client.get(path, headers=headers or {})
    return resp.status, dict(resp.headers), await resp.json()


async def get_from(session: aiohttp.ClientSession, atom: Atom, path: str) -> tuple[int, dict[str, str]]:
    async with session.get(atom.client.make_url(path)) as resp:
        await resp.read()
        return resp.status, dict(resp.headers)


def requests_count(process: str, user: str, status: int) -> float:
    got = metrics.REGISTRY.get_sample_value("atom_listener_requests_total",
                                            {"process": process, "user": user, "status": str(status)})
    return got or 0.0


def throttled_count(process: str) -> float:
    return metrics.REGISTRY.get_sample_value("atom_listener_throttled_total", {"process": process}) or 0.0


# ------------------------------------------------------------------------------------------- by


async def test_by_client_one_bucket_per_address_with_headers(make_atom: MakeAtom,
                                                             other_client: aiohttp.ClientSession) -> None:
    atom = await make_atom({"a.yaml": limited("rl-client", "{requests: 2, per: 1m}")})
    throttled = throttled_count("rl-client")
    for left in ("1", "0"):
        status, headers, body = await get(atom, "/ws/rest/rl-client")
        assert status == 200, body
        assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("2", left)
    status, headers, body = await get(atom, "/ws/rest/rl-client")
    assert status == 429
    assert body["error"]["code"] == "RATE_LIMITED"
    assert "/ws/rest/rl-client" in body["error"]["message"]
    assert headers["Retry-After"] == "30"  # 2 per minute: the next token in (just under) 30 s, rounded up
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("2", "0")
    assert headers["Content-Type"] == "application/json"
    # another address has a bucket of its own
    status, headers = await get_from(other_client, atom, "/ws/rest/rl-client")
    assert status == 200 and headers["X-RateLimit-Remaining"] == "1"
    assert throttled_count("rl-client") == throttled + 1


async def test_by_user_one_bucket_per_authenticated_user(make_atom: MakeAtom) -> None:
    atom = await make_atom({"a.yaml": limited("rl-user", "{requests: 1, per: 1m, by: user}", BASIC)})
    status, _, body = await get(atom, "/ws/rest/rl-user", basic("alice", "a-pw"))
    assert (status, body["user"]) == (200, "alice")
    status, headers, _ = await get(atom, "/ws/rest/rl-user", basic("alice", "a-pw"))
    assert status == 429 and headers["Retry-After"] == "60"
    # bob, from the same address, still has his bucket
    status, headers, body = await get(atom, "/ws/rest/rl-user", basic("bob", "b-pw"))
    assert (status, body["user"], headers["X-RateLimit-Remaining"]) == (200, "bob", "0")


async def test_by_user_without_auth_falls_back_to_the_client_address(
        make_atom: MakeAtom, other_client: aiohttp.ClientSession) -> None:
    atom = await make_atom({"a.yaml": limited("rl-anon", "{requests: 1, per: 1m, by: user}")})
    assert (await get(atom, "/ws/rest/rl-anon"))[0] == 200
    assert (await get(atom, "/ws/rest/rl-anon"))[0] == 429
    assert (await get_from(other_client, atom, "/ws/rest/rl-anon"))[0] == 200


async def test_by_listener_one_bucket_for_all_callers(make_atom: MakeAtom,
                                                      other_client: aiohttp.ClientSession) -> None:
    atom = await make_atom({"a.yaml": limited("rl-all", "{requests: 1, per: 1m, by: listener}", BASIC)})
    assert (await get(atom, "/ws/rest/rl-all", basic("alice", "a-pw")))[0] == 200
    assert (await get(atom, "/ws/rest/rl-all", basic("bob", "b-pw")))[0] == 429
    status, headers = await get_from(other_client, atom, "/ws/rest/rl-all")
    assert status == 401  # authentication comes first, whatever the bucket says
    assert "X-RateLimit-Limit" not in headers


async def test_burst_lets_a_run_through_then_tokens_come_back_at_the_rate(make_atom: MakeAtom) -> None:
    atom = await make_atom({"a.yaml": limited("rl-burst", "{requests: 1, per: 1m, burst: 3}"),
                            "b.yaml": limited("rl-fast", "{requests: 20, per: 1s, burst: 1}")})
    for left in ("2", "1", "0"):
        status, headers, _ = await get(atom, "/ws/rest/rl-burst")
        assert (status, headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == (200, "3", left)
    status, headers, _ = await get(atom, "/ws/rest/rl-burst")
    assert (status, headers["Retry-After"]) == (429, "60")
    # 20 per second: a token every 50 ms; Retry-After never says less than 1 s
    assert (await get(atom, "/ws/rest/rl-fast"))[0] == 200
    status, headers, _ = await get(atom, "/ws/rest/rl-fast")
    assert (status, headers["Retry-After"]) == (429, "1")
    await asyncio.sleep(0.08)
    assert (await get(atom, "/ws/rest/rl-fast"))[0] == 200


# ------------------------------------------------------------------------------------------- order


async def test_unauthenticated_requests_get_401_and_take_no_token(make_atom: MakeAtom) -> None:
    atom = await make_atom({"a.yaml": limited("rl-auth", "{requests: 1, per: 1m, by: listener}", KEYS)})
    for headers in ({}, {"X-API-Key": "wrong"}, {}, {"X-API-Key": "nope"}):
        status, got, body = await get(atom, "/ws/rest/rl-auth", headers)
        assert (status, body["error"]["code"]) == (401, "UNAUTHORIZED")
        assert "X-RateLimit-Remaining" not in got
    status, got, body = await get(atom, "/ws/rest/rl-auth", {"X-API-Key": "acme-key"})
    assert (status, body["user"], got["X-RateLimit-Remaining"]) == (200, "acme", "0")
    status, got, body = await get(atom, "/ws/rest/rl-auth", {"X-API-Key": "globex-key"})
    assert (status, body["error"]["code"]) == (429, "RATE_LIMITED")
    # a wrong key over the limit is still a 401, not a 429
    assert (await get(atom, "/ws/rest/rl-auth", {"X-API-Key": "wrong"}))[0] == 401


async def test_the_server_wide_limit_still_applies(make_atom: MakeAtom) -> None:
    atom = await make_atom({"a.yaml": limited("rl-loose", "{requests: 100, per: 1m}"),
                            "b.yaml": limited("rl-tight", "{requests: 1, per: 1m}")},
                           config="limits: {rate_limit: {requests: 3, per: 1m}}\n")
    # the listener allows 100, the server 3 per client and listener
    for _ in range(3):
        assert (await get(atom, "/ws/rest/rl-loose"))[0] == 200
    status, headers, body = await get(atom, "/ws/rest/rl-loose")
    assert (status, body["error"]["code"]) == (429, "RATE_LIMITED")
    assert headers["Retry-After"] == "20"
    assert "X-RateLimit-Limit" not in headers  # the server's limit, not the listener's
    # the listener's tighter limit refuses before the server's
    assert (await get(atom, "/ws/rest/rl-tight"))[0] == 200
    status, headers, _ = await get(atom, "/ws/rest/rl-tight")
    assert (status, headers["X-RateLimit-Limit"], headers["Retry-After"]) == (429, "1", "60")


# ------------------------------------------------------------------------------------------- reload


async def test_a_reload_keeps_the_bucket_while_the_limit_stays_and_resets_it_when_it_changes(
        make_atom: MakeAtom) -> None:
    atom = await make_atom({"a.yaml": limited("rl-reload", "{requests: 2, per: 1m}")})
    status, headers, body = await get(atom, "/ws/rest/rl-reload")
    assert (status, body["v"], headers["X-RateLimit-Remaining"]) == (200, 1, "1")
    # the process changes, its limit does not: the bucket goes on
    atom.write("a.yaml", limited("rl-reload", "{requests: 2, per: 60s}", version=2))
    assert await atom.runtime.reload()
    status, headers, body = await get(atom, "/ws/rest/rl-reload")
    assert (status, body["v"], headers["X-RateLimit-Remaining"]) == (200, 2, "0")
    assert (await get(atom, "/ws/rest/rl-reload"))[0] == 429
    # a changed limit starts with a full bucket
    atom.write("a.yaml", limited("rl-reload", "{requests: 3, per: 1m}", version=3))
    assert await atom.runtime.reload()
    status, headers, body = await get(atom, "/ws/rest/rl-reload")
    assert (status, body["v"], headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == (200, 3, "3", "2")
    # without a limit, the listener answers without the headers
    atom.write("a.yaml", limited("rl-reload", "null", version=4).replace("    rate_limit: null\n", ""))
    assert await atom.runtime.reload()
    for _ in range(4):
        status, headers, body = await get(atom, "/ws/rest/rl-reload")
        assert (status, body["v"]) == (200, 4) and "X-RateLimit-Limit" not in headers


# ------------------------------------------------------------------------------------------- load


@pytest.mark.parametrize(("limit", "at", "message"), [
    ("{requests: 5, per: soon}", "soon", "expected a duration like 200ms, 30s, 5m, got 'soon'"),
    ("{requests: 5, per: 0s}", "0s", "must be longer than 0, got '0s'"),
    ("{requests: 5, by: usr}", "usr", "'usr' is not one of client, user, listener (did you mean 'user'?)"),
    ("{requests: 0}", "0}", "must be >= 1, got 0"),
    ("{requests: 5, burst: 0}", "0}", "must be >= 1, got 0"),
    ("{per: 1s}", "{per", "missing required field 'requests'"),
])
def test_load_time_errors_are_located(tmp_path: Path, limit: str, at: str, message: str) -> None:
    text = textwrap.dedent(limited("rl-bad", limit))
    (tmp_path / "p.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(LoadError) as got:
        load_directory(tmp_path, env={})
    problems = [str(p) for p in got.value.problems]
    lines = text.splitlines()
    row = next(i for i, line in enumerate(lines) if "rate_limit:" in line)
    col = lines[row].index(at) + 1
    assert len(problems) == 1, problems
    assert problems[0].endswith(f"p.yaml:{row + 1}:{col}: error: {message}"), problems


# ------------------------------------------------------------------------------------------- usage


async def test_requests_are_counted_by_process_user_and_status(make_atom: MakeAtom,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_listeners, "MAX_USERS_PER_PROCESS", 1)
    atom = await make_atom({"a.yaml": limited("rl-usage", "{requests: 1, per: 1m, by: user}", BASIC)})
    before = {k: requests_count("rl-usage", *k) for k in
              [("alice", 200), ("alice", 429), ("anonymous", 401), ("other", 200)]}
    await get(atom, "/ws/rest/rl-usage", basic("alice", "a-pw"))
    await get(atom, "/ws/rest/rl-usage", basic("alice", "a-pw"))
    await get(atom, "/ws/rest/rl-usage", basic("alice", "wrong"))
    await get(atom, "/ws/rest/rl-usage", basic("bob", "b-pw"))  # over the cap of distinct users: "other"
    after = {k: requests_count("rl-usage", *k) - v for k, v in before.items()}
    assert after == {("alice", 200): 1, ("alice", 429): 1, ("anonymous", 401): 1, ("other", 200): 1}
    text = await (await atom.client.get("/metrics")).text()
    assert 'atom_listener_requests_total{process="rl-usage",status="429",user="alice"}' in text
    assert 'atom_listener_throttled_total{process="rl-usage"}' in text


def test_token_bucket_values() -> None:
    lim = ListenerRateLimit((2, 1.0, 4, "user"))
    assert lim.key("10.0.0.1", "ann") == "ann" and lim.key("10.0.0.1", None) == "10.0.0.1"
    assert [lim.take("k") for _ in range(4)] == pytest.approx([3, 2, 1, 0], abs=0.01)
    wait = -lim.take("k")
    assert 0.45 < wait <= 0.5  # 2 per second: half a second to the next token
    assert lim.remaining(3.7) == "3" and lim.refused(wait, "/p").headers["Retry-After"] == "1"
    assert ListenerRateLimit((1, 1.0, 1, "listener")).key("a", "b") == ""
    assert ListenerRateLimit((1, 1.0, 1, "client")).key("a", "b") == "a"


PROPS = """
process: rl-props
start:
  listen:
    rest: {method: GET, path: "/rl-props"}
    input: none
    output: json
    auth: {type: api_key, header: X-Partner-Key, keys: {acme: acme-key}}
    rate_limit: {requests: 5, per: 1m, by: user}
shapes:
  - {id: m, message: {template: '{{ doc.props | tojson }}'}}
  - {id: r, return: {}}
"""


async def test_the_key_of_an_api_key_listener_never_becomes_a_property(make_atom: MakeAtom) -> None:
    atom = await make_atom({"a.yaml": PROPS})
    status, _, props = await get(atom, "/ws/rest/rl-props", {"x-partner-key": "acme-key", "X-Trace": "t-1"})
    assert status == 200
    assert props["inheader_X-Trace"] == "t-1"
    assert not [k for k in props if k.lower() == "inheader_x-partner-key"], props
