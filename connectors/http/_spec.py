"""Field specs of the HTTP connector: the connection, and the `send` and `get` operations.

These specs are the single description of every field: validation, `atom schema`, `atom connectors`
and docs/connectors/http.md all follow them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from atom.errors import Location
from atom.expressions import ExpressionSyntaxError, compile_jsonpath
from atom.resilience import NETWORK_FIELDS
from atom.spec import (
    MISSING,
    Bool,
    CheckContext,
    Custom,
    Duration,
    Enum,
    Field,
    Int,
    MapOf,
    Object,
    OneOf,
    Size,
    Spec,
    Str,
    Template,
    Type,
    did_you_mean,
)
from atom.yamlio import Where

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


# ------------------------------------------------------------------------------------------ field types


class Tagged(Type):
    """A mapping whose `type` key selects one of several specs (auth kinds, pagination styles)."""

    def __init__(self, variants: dict[str, Spec]) -> None:
        self.variants = variants
        self.label = "mapping with type: " + " | ".join(variants)

    def check(self, value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        if not isinstance(value, Mapping):
            ctx.error(loc, f"expected a mapping with type: {' | '.join(self.variants)}")
            return MISSING
        kind = value.get("type")
        if kind is None:
            ctx.error(loc, f"missing required field 'type' (one of: {', '.join(self.variants)})")
            return MISSING
        spec = self.variants.get(str(kind))
        if spec is None:
            ctx.error(where.value("type"), f"'{kind}' is not one of {', '.join(self.variants)}"
                                           f"{did_you_mean(str(kind), self.variants)}")
            return MISSING
        return spec.check(value, where, ctx)

    def schema(self) -> dict[str, Any]:
        return {"oneOf": [s.schema() for s in self.variants.values()]}


def _type_field(name: str) -> Field:
    return Field("type", Enum(name), required=True, description=f"`{name}`")


def _check_jsonpath(value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
    if not isinstance(value, str) or not value.startswith("$"):
        ctx.error(loc, f"expected a JSONPath starting with '$', got {value!r}")
        return MISSING
    try:
        compile_jsonpath(value)
    except ExpressionSyntaxError as exc:
        ctx.error(loc, str(exc))
        return MISSING
    return value


JSONPATH = Custom(_check_jsonpath, {"type": "string", "pattern": r"^\$"}, label="JSONPath")


def parse_expect(value: Any) -> frozenset[int] | None:
    """`200`, `"2xx"`, `[200, 404]`, `["2xx", 304]` -> the set of status codes; None if malformed."""
    items = value if isinstance(value, list) else [value]
    codes: set[int] = set()
    for item in items:
        text = str(item).strip().lower()
        if isinstance(item, bool) or not text:
            return None
        if len(text) == 3 and text[0] in "12345" and text[1:] == "xx":
            base = int(text[0]) * 100
            codes.update(range(base, base + 100))
        elif text.isdigit() and 100 <= int(text) <= 599:
            codes.add(int(text))
        else:
            return None
    return frozenset(codes) if codes else None


def _check_expect(value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
    got = parse_expect(value)
    if got is None:
        ctx.error(loc, f"expected status codes like 200, 2xx or [200, 404], got {value!r}")
        return MISSING
    return got


_STATUS_SCHEMA: dict[str, Any] = {"anyOf": [{"type": "integer", "minimum": 100, "maximum": 599},
                                            {"type": "string", "pattern": r"^([1-5]xx|[1-5][0-9][0-9])$"}]}
EXPECT = Custom(_check_expect, {"anyOf": [_STATUS_SCHEMA, {"type": "array", "items": _STATUS_SCHEMA}]},
                label="status codes")

#: Status codes that count as success unless the operation says `expect:`.
DEFAULT_EXPECT = frozenset(range(200, 300))


def _check_method(value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
    method = str(value).upper() if isinstance(value, str) else value
    return Enum(*HTTP_METHODS).check(method, where, loc, ctx)


#: An HTTP method, in any case (`post` is `POST`).
METHOD = Custom(_check_method, {"enum": [*HTTP_METHODS, *(m.lower() for m in HTTP_METHODS)]},
                label=" | ".join(HTTP_METHODS))


# ------------------------------------------------------------------------------------------ connection

AUTH_VARIANTS = {
    "basic": Spec([
        _type_field("basic"),
        Field("username", Str(), required=True, description="user name"),
        Field("password", Str(), required=True, secret=True, description="password"),
    ], summary="HTTP Basic authentication"),
    "bearer": Spec([
        _type_field("bearer"),
        Field("token", Str(), required=True, secret=True, description="the token sent as `Bearer <token>`"),
    ], summary="A fixed bearer token"),
    "api_key": Spec([
        _type_field("api_key"),
        Field("header", Str(), description="request header that carries the key, e.g. X-Api-Key"),
        Field("query", Str(), description="query parameter that carries the key, e.g. api_key"),
        Field("value", Str(), required=True, secret=True, description="the key"),
    ], one_of=("header", "query"), summary="An API key in a header or a query parameter"),
    "oauth2": Spec([
        _type_field("oauth2"),
        Field("token_url", Str(), required=True, description="token endpoint of the authorization server"),
        Field("client_id", Str(), required=True, description="client id"),
        Field("client_secret", Str(), required=True, secret=True, description="client secret"),
        Field("scope", Str(), description="space-separated scopes to request"),
        Field("audience", Str(), description="`audience` parameter (some servers require it)"),
        Field("client_auth", Enum("basic", "body"), default="basic",
              description="how the client authenticates: HTTP Basic header, or client_id/client_secret "
                          "in the form body"),
        Field("refresh_before", Duration(), default=30.0,
              description="renew the token this long before it expires (at most a tenth of its lifetime)"),
    ], summary="OAuth 2.0 client credentials grant, token cached until shortly before expiry"),
}

TLS_SPEC = Spec([
    Field("ca_file", Str(),
          description="PEM file of the CA certificates to trust (instead of the system store)"),
    Field("cert_file", Str(), description="PEM client certificate (mutual TLS)"),
    Field("key_file", Str(), description="PEM private key of the client certificate (default: in cert_file)"),
    Field("key_password", Str(), secret=True, description="password of an encrypted key_file"),
    Field("verify", Bool(), default=True,
          description="verify the server certificate and host name; false only for tests (logs a warning)"),
], summary="TLS settings for https:// URLs")

POOL_SPEC = Spec([
    Field("limit", Int(minimum=0), default=100, description="open connections in total (0: no limit)"),
    Field("limit_per_host", Int(minimum=0), default=0, description="open connections per host (0: no limit)"),
], summary="Connection pool of the connection (shared by all executions)")


def _defaults(spec: Spec) -> dict[str, Any]:
    return {f.name: f.default for f in spec.fields if f.default is not MISSING and not callable(f.default)}


TLS_DEFAULTS = _defaults(TLS_SPEC)
POOL_DEFAULTS = _defaults(POOL_SPEC)

CONNECTION_SPEC = Spec([
    Field("url", Str(), required=True,
          description="base URL (http:// or https://); operation paths are appended to it"),
    Field("headers", MapOf(Str()), default=dict, description="headers sent with every request"),
    Field("auth", Tagged(AUTH_VARIANTS), description="authentication: basic, bearer, api_key or oauth2"),
    Field("tls", Object(TLS_SPEC), default=lambda: dict(TLS_DEFAULTS), description="TLS settings"),
    Field("pool", Object(POOL_SPEC), default=lambda: dict(POOL_DEFAULTS), description="connection pool"),
    Field("follow_redirects", Bool(), default=True,
          description="follow 3xx redirects (credentials are dropped when a redirect leaves the origin)"),
    Field("max_response_size", Size(), default=64 * 1024 * 1024,
          description="largest response body accepted (bytes, or 10MiB); a larger one fails the document"),
    *NETWORK_FIELDS,
], summary="An HTTP or HTTPS service")


# ------------------------------------------------------------------------------------------ operations

BODY_SPEC = Spec([
    Field("json", Template(), description="template that renders the JSON body"),
    Field("form", MapOf(Template()), description="form fields (templates), sent urlencoded"),
    Field("template", Template(), description="template that renders a text body (XML, CSV, ...)"),
], one_of=("json", "form", "template"), summary="A body built from templates")

PAGINATE_VARIANTS = {
    "link_header": Spec([_type_field("link_header")],
                        summary='follow the `Link: <url>; rel="next"` response header (RFC 8288)'),
    "cursor": Spec([
        _type_field("cursor"),
        Field("cursor_path", JSONPATH, required=True,
              description="JSONPath of the next cursor in the response, e.g. $.next"),
        Field("param", Str(), default="cursor", description="query parameter that sends the cursor"),
    ], summary="a cursor from each response is sent as a query parameter of the next request"),
    "page": Spec([
        _type_field("page"),
        Field("param", Str(), default="page", description="query parameter of the page number"),
        Field("start", Int(), default=1, description="number of the first page"),
        Field("size_param", Str(), description="query parameter of the page size"),
        Field("size", Int(minimum=1), description="page size; a shorter page is the last one"),
        Field("stop_when_empty", Bool(), default=True, description="an empty page ends the reading"),
    ], summary="numbered pages"),
}


def _request_fields(method_default: str) -> list[Field]:
    return [
        Field("method", METHOD, default=method_default, description="HTTP method (any case)"),
        Field("path", Template(), description="path (template) appended to the connection url; may hold a "
                                              "?query"),
        Field("query", MapOf(Template()), default=dict,
              description="query parameters (templates); one that renders empty is left out"),
        Field("headers", MapOf(Template()), default=dict,
              description="request headers (templates); one that renders empty is left out"),
        Field("expect", EXPECT, description="status codes that count as success (default: 2xx)"),
        Field("timeout", Duration(),
              description="timeout of one attempt (default: the connection's timeout)"),
    ]


SEND_SPEC = Spec([
    *_request_fields("POST"),
    Field("body", OneOf(Enum("document", "none"), Object(BODY_SPEC)), default="document",
          description="request body: document (the document itself), none, {json: template}, "
                      "{form: {field: template}} or {template: template}"),
    Field("content_type", Str(), description="Content-Type of the body (default: from the body kind; a "
                                             "document is recognised as JSON, XML or text)"),
    Field("response", Enum("body", "keep"), default="body",
          description="body: the response body becomes the outgoing document; keep: the input document "
                      "goes on with the response properties added"),
    Field("concurrency", Int(minimum=1), default=1,
          description="requests in flight at once for one batch (results keep the input order)"),
], summary="One request per document")

GET_SPEC = Spec([
    *_request_fields("GET"),
    Field("paginate", Tagged(PAGINATE_VARIANTS), description="read more pages: link_header, cursor or page"),
    Field("max_pages", Int(minimum=1), default=100,
          description="stop after this many pages (logs a warning)"),
    Field("split", JSONPATH, description="JSONPath that splits each page into one document per match, "
                                         "e.g. $.items[*]"),
], summary="Read documents: one request (or one per input document), optionally paginated")
