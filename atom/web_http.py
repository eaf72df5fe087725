"""HTTP building blocks shared by the listeners and the management API.

`HttpResult` is an HTTP response as data (status, headers, body): the runtime builds one per listener
execution, sends it, and stores it so `GET /api/v1/executions/{id}/response` can answer exactly what
the synchronous call would have. Errors use one JSON envelope:
`{"error": {"code": "...", "message": "...", "executionId": "..."}}`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

JSON_TYPE = "application/json"


@dataclass(slots=True)
class HttpResult:
    """An HTTP response as data. Header names keep their case; a name appears at most once."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def to_web(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, headers=self.headers)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: the body as UTF-8 text when it decodes, else base64 (`bodyEncoding`)."""
        try:
            body, enc = self.body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            body, enc = base64.b64encode(self.body).decode("ascii"), "base64"
        return {"status": self.status, "headers": dict(self.headers), "body": body, "bodyEncoding": enc}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HttpResult:
        raw = d.get("body", "")
        body = base64.b64decode(raw) if d.get("bodyEncoding") == "base64" else str(raw).encode("utf-8")
        return cls(int(d["status"]), dict(d.get("headers") or {}), body)


def error_body(code: str, message: str, execution_id: str | None = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if execution_id:
        err["executionId"] = execution_id
    return orjson.dumps({"error": err})


def error_result(status: int, code: str, message: str, execution_id: str | None = None,
                 headers: Mapping[str, str] | None = None) -> HttpResult:
    """The JSON error envelope as an HttpResult."""
    h = {"Content-Type": JSON_TYPE}
    if execution_id:
        h["X-Execution-Id"] = execution_id
    if headers:
        h.update(headers)
    return HttpResult(status, h, error_body(code, message, execution_id))


def error_response(status: int, code: str, message: str, execution_id: str | None = None,
                   headers: Mapping[str, str] | None = None) -> web.Response:
    """The JSON error envelope as an aiohttp response."""
    return error_result(status, code, message, execution_id, headers).to_web()


def json_response(value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    h = {"Content-Type": JSON_TYPE}
    if headers:
        h.update(headers)
    return web.Response(status=status, body=orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS), headers=h)


#: request headers never copied to `inheader_*` document properties (credentials and hop-by-hop)
EXCLUDED_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "connection", "keep-alive", "proxy-authenticate",
    "proxy-connection", "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})


#: raw header name -> its property name (None: never a property); bounded
_PROP_NAMES: dict[bytes, str | None] = {}


def header_properties(raw_headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """`inheader_<Name>` document properties for the request headers, names spelled as the client sent
    them (first value of a repeated header)."""
    out: dict[str, str] = {}
    names = _PROP_NAMES
    for k, v in raw_headers:
        prop = names.get(k, "")
        if prop == "":
            name = k.decode("latin-1")
            prop = None if name.lower() in EXCLUDED_HEADERS else "inheader_" + name
            if len(names) < 4096:
                names[k] = prop
        if prop is not None and prop not in out:
            out[prop] = v.decode("utf-8", "replace")
    return out


def base_url(request: web.Request, configured: str | None) -> str:
    """The public base URL (`server.base_url`, else scheme and Host of the request), no trailing /."""
    if configured:
        return configured.rstrip("/")
    return f"{request.scheme}://{request.host}"


def parse_max_wait(value: str | None, server_max_ms: int, default_ms: int) -> float:
    """X-Max-Wait in milliseconds -> seconds to wait, capped by the server's max_wait_ms.

    Raises ValueError with a user-facing message for a malformed value.
    """
    if value is None:
        ms = default_ms
    else:
        try:
            ms = int(value.strip())
        except ValueError:
            raise ValueError(f"X-Max-Wait must be a whole number of milliseconds, got '{value}'") from None
        if ms < 0:
            raise ValueError(f"X-Max-Wait must not be negative, got {ms}")
    return min(ms, server_max_ms) / 1000.0
