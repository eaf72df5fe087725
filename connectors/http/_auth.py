"""Authentication of outgoing requests: basic, bearer, API key, OAuth 2.0 client credentials.

An `Auth` adds its credential to a request (`apply`) and lists its secret values (`secrets()`) so the
connector can scrub them from any message. Only OAuth 2.0 can renew its credential after a 401.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDict
from yarl import URL

from atom.errors import AUTH, STATUS, TIMEOUT, UNREACHABLE, ConnectorError


def basic_header(user: str, password: str) -> str:
    """`Authorization` value of HTTP Basic authentication (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class Auth:
    """No authentication."""

    kind = "none"
    #: True if a 401 answer may be cured by renewing the credential (once per request)
    renewable = False

    async def apply(self, session: aiohttp.ClientSession, headers: CIMultiDict[str], url: URL,
                    stale: str | None = None) -> tuple[URL, str | None]:
        """Add the credential to `headers` / `url`. Returns the URL to call and the credential used
        (pass it back as `stale` to force a renewal after a 401)."""
        return url, None

    def secrets(self) -> list[str]:
        return []

    def describe(self) -> dict[str, Any]:
        return {"type": self.kind}


class BasicAuth(Auth):
    kind = "basic"

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.username = str(cfg["username"])
        self._password = str(cfg["password"])
        self._header = basic_header(self.username, self._password)

    async def apply(self, session: aiohttp.ClientSession, headers: CIMultiDict[str], url: URL,
                    stale: str | None = None) -> tuple[URL, str | None]:
        headers["Authorization"] = self._header
        return url, None

    def secrets(self) -> list[str]:
        return [self._password, self._header.split(" ", 1)[1]]

    def describe(self) -> dict[str, Any]:
        return {"type": self.kind, "username": self.username}


class BearerAuth(Auth):
    kind = "bearer"

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self._token = str(cfg["token"])

    async def apply(self, session: aiohttp.ClientSession, headers: CIMultiDict[str], url: URL,
                    stale: str | None = None) -> tuple[URL, str | None]:
        headers["Authorization"] = f"Bearer {self._token}"
        return url, None

    def secrets(self) -> list[str]:
        return [self._token]


class ApiKeyAuth(Auth):
    kind = "api_key"

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.header: str | None = cfg.get("header")
        self.query: str | None = cfg.get("query")
        self._value = str(cfg["value"])

    async def apply(self, session: aiohttp.ClientSession, headers: CIMultiDict[str], url: URL,
                    stale: str | None = None) -> tuple[URL, str | None]:
        if self.header:
            headers[self.header] = self._value
        if self.query:
            url = url.update_query({self.query: self._value})
        return url, None

    def secrets(self) -> list[str]:
        return [self._value]

    def describe(self) -> dict[str, Any]:
        where = {"header": self.header} if self.header else {"query": self.query}
        return {"type": self.kind, **where}


class OAuth2Auth(Auth):
    """OAuth 2.0 client credentials (RFC 6749 section 4.4).

    The token is fetched on first use and shared by every request of the connection. It is renewed
    `refresh_before` (at most a tenth of its lifetime) before `expires_in` runs out; a token without
    `expires_in` is kept until the API answers 401. Concurrent requests wait for one fetch.
    """

    kind = "oauth2"
    renewable = True

    def __init__(self, cfg: Mapping[str, Any], connection: str, timeout: float,
                 clock: Any = time.monotonic) -> None:
        self.connection = connection
        self.token_url = URL(str(cfg["token_url"]))
        self.client_id = str(cfg["client_id"])
        self._client_secret = str(cfg["client_secret"])
        self.scope: str | None = cfg.get("scope")
        self.audience: str | None = cfg.get("audience")
        self.client_auth: str = cfg.get("client_auth", "basic")
        self.refresh_before: float = float(cfg.get("refresh_before", 30.0))
        self.timeout = timeout
        self.clock = clock
        self._token: str | None = None
        self._expires_at: float | None = None
        self._lock: asyncio.Lock | None = None
        #: number of token requests made (visible for tests and diagnostics)
        self.fetches = 0

    def _valid(self) -> bool:
        return self._token is not None and (self._expires_at is None or self.clock() < self._expires_at)

    async def apply(self, session: aiohttp.ClientSession, headers: CIMultiDict[str], url: URL,
                    stale: str | None = None) -> tuple[URL, str | None]:
        token = await self.token(session, stale)
        headers["Authorization"] = token
        return url, token

    async def token(self, session: aiohttp.ClientSession, stale: str | None = None) -> str:
        """The `Authorization` value to send. A cached token is reused unless it expired or equals
        `stale` (the one the API just refused); then one request fetches a new token."""
        if self._valid() and self._token != stale:
            return self._token  # type: ignore[return-value]
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._valid() and self._token != stale:
                return self._token  # type: ignore[return-value]
            self._token = None
            token, lifetime = await self._fetch(session)
            self._token = token
            if lifetime is None:
                self._expires_at = None
            else:
                margin = min(self.refresh_before, lifetime / 10)
                self._expires_at = self.clock() + max(0.0, lifetime - margin)
            return token

    async def _fetch(self, session: aiohttp.ClientSession) -> tuple[str, float | None]:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        if self.audience:
            form["audience"] = self.audience
        headers = {"Accept": "application/json"}
        if self.client_auth == "body":
            form["client_id"] = self.client_id
            form["client_secret"] = self._client_secret
        else:
            headers["Authorization"] = basic_header(self.client_id, self._client_secret)
        what = f"OAuth token request to {self.token_url}"
        self.fetches += 1
        try:
            async with session.post(self.token_url, data=form, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                                    allow_redirects=False) as resp:
                status, reason = resp.status, resp.reason or ""
                body = await resp.content.read(1024 * 1024)
        except TimeoutError:
            raise ConnectorError(f"{what}: no answer within {self.timeout:g}s", retryable=True,
                                 kind=TIMEOUT) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectorError(f"{what}: network error: {exc or type(exc).__name__}",
                                 retryable=True, kind=UNREACHABLE) from None
        if not 200 <= status < 300:
            excerpt = body[:500].decode("utf-8", "replace")
            later = status == 429 or status >= 500  # the token service is overloaded or failing
            raise ConnectorError(f"{what} answered {status} {reason}: {excerpt}",
                                 retryable=later, status=status, kind=STATUS if later else AUTH)
        try:
            data = orjson.loads(body)
            token = data["access_token"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise ConnectorError(f"{what}: the answer holds no access_token", status=status,
                                 kind=AUTH) from None
        if not isinstance(token, str) or not token:
            raise ConnectorError(f"{what}: the answer holds no access_token", status=status, kind=AUTH)
        token_type = str(data.get("token_type") or "Bearer")
        if token_type.lower() == "bearer":
            token_type = "Bearer"
        lifetime: float | None = None
        try:
            if data.get("expires_in") is not None:
                lifetime = max(0.0, float(data["expires_in"]))
        except (TypeError, ValueError):
            lifetime = None
        return f"{token_type} {token}", lifetime

    def secrets(self) -> list[str]:
        out = [self._client_secret]
        if self._token:
            out.append(self._token.split(" ", 1)[-1])
        return out

    def describe(self) -> dict[str, Any]:
        return {"type": self.kind, "token_url": str(self.token_url), "client_id": self.client_id,
                "scope": self.scope}


def make_auth(cfg: Mapping[str, Any] | None, connection: str, timeout: float) -> Auth:
    """The Auth of a checked `auth:` mapping (None: no authentication)."""
    if not cfg:
        return Auth()
    kind = cfg.get("type")
    if kind == "basic":
        return BasicAuth(cfg)
    if kind == "bearer":
        return BearerAuth(cfg)
    if kind == "api_key":
        return ApiKeyAuth(cfg)
    if kind == "oauth2":
        return OAuth2Auth(cfg, connection, timeout)
    raise ValueError(f"connection '{connection}': unknown auth type '{kind}'")
