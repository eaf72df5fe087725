"""Specs of the component files (process, connection, map) and the JSON Schema built from them."""

from __future__ import annotations

from typing import Any

from .config import JWT_SPEC
from .errors import Location
from .spec import (
    MISSING,
    Any_,
    Bool,
    CheckContext,
    Duration,
    Enum,
    Field,
    Int,
    ListOf,
    MapOf,
    Object,
    OneOf,
    Spec,
    Str,
)
from .yamlio import Where

NAME = Str(pattern=r"[A-Za-z0-9][A-Za-z0-9_.\-]*")

OPERATIONS = ("get", "query", "create", "update", "upsert", "delete", "execute")
INPUT_TYPES = ("none", "data", "xml", "xml_multiple", "json", "json_multiple")
OUTPUT_TYPES = ("none", "data", "xml", "json")

REST_SPEC = Spec([
    Field("method", Enum("GET", "POST", "PUT", "PATCH", "DELETE"), default="POST", description="HTTP method"),
    Field("path", Str(pattern=r"/[^\s]*"), required=True,
          description="path under /ws/rest, with {param} segments (-> process property param_<name>)"),
], summary="A REST listener: /ws/rest/<path>")

SOAP_SPEC = Spec([
    Field("operation", Str(pattern=r"[A-Za-z_][A-Za-z0-9_\-]*"), required=True,
          description="SOAP operation name (the body's first element)"),
    Field("namespace", Str(), description="target namespace of the operation's elements"),
    Field("response", Str(), description="response element name (default: <operation>Response)"),
], summary="A SOAP listener on /ws/soap and /ws/soap12", open=True)

_CREDENTIALS = OneOf(ListOf(Str()), MapOf(Str()))

LISTEN_AUTH_SPEC = Spec([
    Field("type", Enum("none", "basic", "bearer", "jwt", "api_key", "inherit"), default="inherit",
          description="listener authentication; inherit uses the server's (atom.yaml auth)"),
    Field("users", MapOf(Str()), description="basic: user -> password (default: the server's auth.users)"),
    Field("tokens", _CREDENTIALS, description="bearer: tokens, or user -> token (default: the server's)"),
    Field("keys", _CREDENTIALS, description="api_key: keys, or user -> key (default: the server's)"),
    Field("header", Str(), description="api_key: request header holding the key (default X-API-Key)"),
    Field("jwt", Object(JWT_SPEC), description="jwt: how this listener's tokens are verified (default: the "
                                               "server's auth.jwt)"),
    Field("allow", ListOf(Str()), description="users allowed to call this listener; others get 403"),
], summary="Per-listener authentication")



class Period(Duration):
    """A duration that must be longer than zero (the period of a rate limit)."""

    label = "period"

    def check(self, value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        secs = super().check(value, where, loc, ctx)
        if secs is not MISSING and secs <= 0:
            ctx.error(loc, f"must be longer than 0, got '{value}'")
            return MISSING
        return secs


LISTEN_RATE_SPEC = Spec([
    Field("requests", Int(minimum=1), required=True, description="requests allowed per period"),
    Field("per", Period(), default=1.0, description="the period: 1s, 1m, 1h, ..."),
    Field("burst", Int(minimum=1), description="bucket size: requests that may come at once (default: requests)"),
    Field("by", Enum("client", "user", "listener"), default="client",
          description="one bucket per client address, per authenticated user (the client address when the "
                      "listener has no auth), or one for all callers"),
], summary="Rate limit of this listener (token bucket), on top of limits.rate_limit; over it: 429 with "
           "Retry-After")

LISTEN_SPEC = Spec([
    Field("operation", Enum(*OPERATIONS), default="execute", description="Boomi operation type"),
    Field("object", Str(pattern=r"[A-Za-z0-9_]+"), description="object name: /ws/simple/<operation><Object>"),
    Field("input", Enum(*INPUT_TYPES), default="data", description="request body type"),
    Field("output", Enum(*OUTPUT_TYPES), default="data", description="response body type"),
    Field("rest", Object(REST_SPEC), description="serve as a REST listener instead of /ws/simple"),
    Field("soap", Object(SOAP_SPEC), description="serve as a SOAP operation on /ws/soap"),
    Field("auth", Object(LISTEN_AUTH_SPEC), description="authentication for this listener"),
    Field("max_concurrent", Int(minimum=1),
          description="executions of this listener at once (default: the server's limit)"),
    Field("rate_limit", Object(LISTEN_RATE_SPEC),
          description="requests per period for this listener, checked after authentication"),
], summary="Web Services Server listener")

SCHEDULE_SPEC = Spec([
    Field("cron", Str(), description='five-field cron expression, e.g. "*/5 * * * *"'),
    Field("every", Duration(), description="fixed interval, e.g. 30s, 5m"),
    Field("timezone", Str(), default="UTC", description="IANA time zone of the cron expression"),
], one_of=("cron", "every"), summary="Run on a schedule")

CONNECTOR_START_SPEC = Spec([
    Field("connection", NAME, required=True, description="connection component"),
    Field("action", Enum("get"), default="get", description="start connectors get documents"),
    Field("operation", Any_(), default=dict, description="operation fields of the connector type"),
    Field("schedule", Object(SCHEDULE_SPEC), description="run the get on a schedule"),
], summary="Start with the documents a connector get returns")

START_SPEC = Spec([
    Field("listen", Object(LISTEN_SPEC), description="start on an HTTP request"),
    Field("schedule", Object(SCHEDULE_SPEC), description="start on a schedule, with one empty document"),
    Field("none", Object(Spec([])), description="start with one empty document"),
    Field("connector", Object(CONNECTOR_START_SPEC), description="start with a connector get"),
    Field("passthrough", Object(Spec([])), description="start with documents from a parent process"),
], one_of=("listen", "schedule", "none", "connector", "passthrough"), summary="How the process starts")

SHAPE_COMMON = [
    Field("id", Str(pattern=r"[A-Za-z_][A-Za-z0-9_\-]*"), description="unique id within the process"),
    Field("next", Str(), description="shape id to go on to (default: the next item; `end` stops)"),
    Field("label", Str(), description="free text shown in logs and docs"),
]

PROCESS_SPEC = Spec([
    Field("process", NAME, required=True, description="unique process name"),
    Field("description", Str(), default="", description="what the process does"),
    Field("mode", Enum("general", "bridge", "low_latency"), default="general",
          description="what is recorded: general (record, log, documents), bridge (record, log), "
                      "low_latency (counters only)"),
    Field("allow_simultaneous", Bool(), default=True,
          description="false: a second run while one is in process is refused"),
    Field("properties", MapOf(Str()), default=dict, description="default process properties"),
    Field("start", Object(START_SPEC), description="how the process starts (default: none)"),
    Field("shapes", Any_(), required=True, description="the shapes, in order"),
], summary="A process: a graph of shapes")

CONNECTION_BASE = [
    Field("connection", NAME, required=True, description="unique connection name"),
    Field("type", Str(), required=True, description="connector type (see `atom connectors`)"),
    Field("description", Str(), default="", description="what this connection is"),
]


def shape_item_schema() -> dict[str, Any]:
    from .shapes import SHAPES

    common = {f.name: f.type.schema() for f in SHAPE_COMMON}
    alts = []
    for kind, cls in sorted(SHAPES.items()):
        s = cls.value_type.schema()
        if cls.summary:
            s = {**s, "description": cls.summary}
        alts.append({"type": "object", "required": [kind], "properties": {**common, kind: s},
                     "additionalProperties": False})
    return {"oneOf": alts}


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) for component files, generated from the specs."""
    from .connector import default_registry
    from .maps import MAP_SPEC

    process = PROCESS_SPEC.schema()
    process["properties"]["shapes"] = {"type": "array", "items": shape_item_schema(),
                                       "description": "the shapes, in order"}
    conns = []
    for name, cls in sorted(default_registry().types.items()):
        spec = Spec([*CONNECTION_BASE, *cls.connection_spec.fields])
        s = spec.schema()
        s["properties"]["type"] = {"const": name}
        s["description"] = cls.summary
        conns.append(s)
    map_schema = Spec([Field("map", NAME, required=True, description="unique map name"),
                       *MAP_SPEC.fields]).schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://atom.dev/schema/components.json",
        "title": "Atom component",
        "definitions": {"map": MAP_SPEC.schema()},
        "oneOf": [process, {"oneOf": conns}, map_schema],
    }
