"""Authentication of listeners and of the management API: basic, bearer, jwt, api_key, per-listener
overrides and allow-lists; the authenticated user becomes process property `inuser`."""

from __future__ import annotations

import base64
import logging
import time

import jwt
import pytest

from atom.config import load_config

from .conftest import MakeAtom

WHO = """
process: who
start:
  listen: {{object: Who, input: none, output: data{auth}}}
shapes:
  - {{id: m, message: {{template: "user={{{{ process.inuser | default('anonymous') }}}}"}}}}
  - {{id: r, return: {{}}}}
"""


def who(auth: str = "", name: str = "who", obj: str = "Who") -> dict[str, str]:
    text = WHO.format(auth=auth).replace("process: who", f"process: {name}").replace("object: Who", f"object: {obj}")
    return {f"{name}.yaml": text}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_basic_auth_for_listeners_and_api(make_atom: MakeAtom) -> None:
    atom = await make_atom(who(), config="auth: {type: basic, users: {alice: wonderland, bob: builder}}\n")
    c = atom.client
    resp = await c.get("/ws/simple/executeWho")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert (await resp.json())["error"]["code"] == "UNAUTHORIZED"
    assert (await c.get("/ws/simple/executeWho", headers=basic("alice", "wrong"))).status == 401
    assert (await c.get("/ws/simple/executeWho", headers={"Authorization": "Basic ???"})).status == 401
    resp = await c.get("/ws/simple/executeWho", headers=basic("alice", "wonderland"))
    assert resp.status == 200 and await resp.read() == b"user=alice"
    assert (await c.get("/api/v1/processes")).status == 401
    assert (await c.get("/metrics")).status == 401
    assert (await c.get("/api/v1/processes", headers=basic("bob", "builder"))).status == 200
    assert (await c.get("/_admin/status")).status == 200  # health checks stay open


async def test_listener_overrides_and_allow_list(make_atom: MakeAtom) -> None:
    files = {**who(", auth: {type: none}", "open", "Open"),
             **who(", auth: {allow: [alice]}", "only", "Only"),
             **who(", auth: {type: api_key, keys: {machine: k-123}}", "keyed", "Keyed")}
    atom = await make_atom(files, config="auth: {type: basic, users: {alice: a, bob: b}}\n")
    c = atom.client
    resp = await c.get("/ws/simple/executeOpen")
    assert resp.status == 200 and await resp.read() == b"user=anonymous"
    assert (await c.get("/ws/simple/executeOnly", headers=basic("alice", "a"))).status == 200
    resp = await c.get("/ws/simple/executeOnly", headers=basic("bob", "b"))
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "FORBIDDEN"
    assert (await c.get("/ws/simple/executeKeyed", headers=basic("alice", "a"))).status == 401
    resp = await c.get("/ws/simple/executeKeyed", headers={"X-API-Key": "k-123"})
    assert resp.status == 200 and await resp.read() == b"user=machine"


async def test_bearer_tokens(make_atom: MakeAtom) -> None:
    atom = await make_atom(who(), config="auth: {type: bearer, tokens: {ci: tok-1}}\n")
    c = atom.client
    resp = await c.get("/ws/simple/executeWho", headers={"Authorization": "Bearer nope"})
    assert resp.status == 401 and "invalid_token" in resp.headers["WWW-Authenticate"]
    resp = await c.get("/ws/simple/executeWho", headers={"Authorization": "Bearer tok-1"})
    assert resp.status == 200 and await resp.read() == b"user=ci"
    assert (await c.get("/api/v1/executions", headers={"Authorization": "Bearer tok-1"})).status == 200


async def test_bearer_token_list_names_users_by_position(make_atom: MakeAtom) -> None:
    atom = await make_atom(who(), config="auth: {type: bearer, tokens: [a, b]}\n")
    resp = await atom.client.get("/ws/simple/executeWho", headers={"Authorization": "Bearer b"})
    assert await resp.read() == b"user=token-2"


async def test_jwt(make_atom: MakeAtom) -> None:
    cfg = "auth: {type: jwt, jwt: {secret: k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3y, audience: atom, issuer: idp}}\n"
    atom = await make_atom(who(), config=cfg)
    key = "k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3y"
    now = int(time.time())

    def tok(**claims: object) -> dict[str, str]:
        base = {"sub": "carol", "aud": "atom", "iss": "idp", "exp": now + 60}
        base.update(claims)
        return {"Authorization": "Bearer " + jwt.encode(base, key, algorithm="HS256")}

    c = atom.client
    resp = await c.get("/ws/simple/executeWho", headers=tok())
    assert resp.status == 200 and await resp.read() == b"user=carol"
    resp = await c.get("/ws/simple/executeWho", headers=tok(exp=now - 60))
    assert resp.status == 401 and (await resp.json())["error"]["message"] == "token expired"
    assert (await c.get("/ws/simple/executeWho", headers=tok(aud="other"))).status == 401
    assert (await c.get("/ws/simple/executeWho", headers=tok(iss="evil"))).status == 401
    forged = {"Authorization": "Bearer " + jwt.encode({"sub": "x", "aud": "atom", "iss": "idp"},
                                                       "another-key-another-key-another-key", algorithm="HS256")}
    assert (await c.get("/ws/simple/executeWho", headers=forged)).status == 401
    assert (await c.get("/api/v1/processes", headers=tok())).status == 200


async def test_a_listener_verifies_jwt_with_its_own_settings(make_atom: MakeAtom) -> None:
    server_key, own_key = "server-key-server-key-server-key-1", "partner-key-partner-key-partner-2"
    own = f", auth: {{type: jwt, jwt: {{secret: {own_key}, issuer: partner, user_claim: client_id}}}}"
    files = {**who(), **who(own, "partner", "Partner")}
    atom = await make_atom(files, config=f"auth: {{type: jwt, jwt: {{secret: {server_key}}}}}\n")
    exp = int(time.time()) + 60

    def tok(key: str, **claims: object) -> dict[str, str]:
        return {"Authorization": "Bearer " + jwt.encode({"sub": "carol", "exp": exp, **claims}, key, algorithm="HS256")}

    c = atom.client
    resp = await c.get("/ws/simple/executePartner", headers=tok(own_key, iss="partner", client_id="acme"))
    assert resp.status == 200 and await resp.read() == b"user=acme"
    # the server's key does not open the partner's listener, nor the partner's key the others
    assert (await c.get("/ws/simple/executePartner", headers=tok(server_key, iss="partner"))).status == 401
    assert (await c.get("/ws/simple/executePartner", headers=tok(own_key, iss="other"))).status == 401
    assert (await c.get("/ws/simple/executeWho", headers=tok(own_key))).status == 401
    resp = await c.get("/ws/simple/executeWho", headers=tok(server_key))
    assert resp.status == 200 and await resp.read() == b"user=carol"


def test_non_loopback_without_auth_warns(caplog: pytest.LogCaptureFixture) -> None:
    from atom.runtime import Runtime

    rt = Runtime(load_config(None, env={"ATOM_SERVER_HOST": "0.0.0.0"}))
    with caplog.at_level(logging.WARNING, logger="atom.runtime"):
        rt._warn_exposure()
    assert "without authentication" in caplog.text
    caplog.clear()
    rt = Runtime(load_config(None, env={"ATOM_SERVER_HOST": "0.0.0.0", "ATOM_AUTH_TYPE": "bearer",
                                        "ATOM_AUTH_TOKENS": "t"}))
    with caplog.at_level(logging.WARNING, logger="atom.runtime"):
        rt._warn_exposure()
    assert "without authentication" not in caplog.text
