"""The Atom's configuration (`atom.yaml`), validated by the same specs as the components.

Every key has a default, so `atom serve` runs with no file at all. Precedence, lowest first: the
embedded defaults, `atom.yaml`, `ATOM_*` environment variables (`ATOM_` + the key path in capitals
joined by `_`, e.g. `ATOM_SERVER_PORT`, `ATOM_LIMITS_MAX_REQUEST_BYTES`), command-line options.
Problems come out all together, located (`atom.yaml:3:5: error: ...` or `ATOM_SERVER_PORT: error: ...`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .errors import LoadError, Location, Problem
from .spec import (
    MISSING,
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
    Size,
    Spec,
    Str,
)
from .yamlio import Where, load_yaml


def _defaults(spec: Spec) -> dict[str, Any]:
    return spec.check({}, Where("<defaults>"), CheckContext(env={}))


TLS_SPEC = Spec([
    Field("cert", Str(), description="PEM certificate chain file of the HTTPS listener"),
    Field("key", Str(), secret=True, description="PEM private key file"),
    Field("client_ca", Str(), description="PEM CA file: when set, HTTPS clients must present a certificate "
                                          "signed by it (mutual TLS)"),
], summary="TLS for the HTTPS port")

SERVER_SPEC = Spec([
    Field("host", Str(), default="127.0.0.1", description="address to bind; a non-loopback address without "
                                                          "auth logs a warning"),
    Field("port", Int(minimum=0, maximum=65535), default=9090, description="HTTP port (0: any free port)"),
    Field("https_port", Int(minimum=0, maximum=65535), default=9093,
          description="HTTPS port, served only when tls.cert and tls.key are set"),
    Field("tls", Object(TLS_SPEC), description="certificate, key and optional client CA"),
    Field("base_url", Str(), description="public base URL used in status links (default: from the request's "
                                         "scheme and Host header)"),
    Field("workers", Int(minimum=1), default=1,
          description="worker processes serving the same port (SO_REUSEPORT, Linux); 1: one process"),
], summary="The shared web server")

JWT_SPEC = Spec([
    Field("secret", Str(), secret=True, description="HMAC key (HS256/HS384/HS512)"),
    Field("public_key", Str(), description="PEM public key, or a file holding it (RS*/ES*/PS*/EdDSA)"),
    Field("algorithms", ListOf(Str(), min_items=1), default=lambda: ["HS256"],
          description="accepted signing algorithms"),
    Field("audience", Str(), description="required `aud` claim"),
    Field("issuer", Str(), description="required `iss` claim"),
    Field("user_claim", Str(), default="sub", description="claim that names the user (-> inuser)"),
    Field("leeway", Duration(), default=0.0, description="clock skew tolerated on exp/nbf"),
], summary="JSON Web Token verification")

_CREDENTIALS = OneOf(ListOf(Str()), MapOf(Str()))

AUTH_SPEC = Spec([
    Field("type", Enum("none", "basic", "bearer", "jwt", "api_key"), default="none",
          description="authentication of listeners and of the management API"),
    Field("users", MapOf(Str()), default=dict, description="basic: user name -> password"),
    Field("tokens", _CREDENTIALS, default=list,
          description="bearer: a list of tokens (user token-1, token-2, ...) or a mapping user -> token"),
    Field("header", Str(), default="X-API-Key", description="api_key: request header holding the key"),
    Field("keys", _CREDENTIALS, default=list,
          description="api_key: a list of keys (user key-1, ...) or a mapping user -> key"),
    Field("jwt", Object(JWT_SPEC), description="jwt: how tokens are verified"),
    Field("realm", Str(), default="atom", description="realm named in WWW-Authenticate"),
], summary="Authentication")

RATE_SPEC = Spec([
    Field("requests", Int(minimum=1), required=True, description="requests allowed per period"),
    Field("per", Duration(), default=1.0, description="the period"),
    Field("burst", Int(minimum=1), description="bucket size (default: requests)"),
    Field("by", Enum("client", "listener"), default="client",
          description="one bucket per client address and listener, or one per listener"),
], summary="Listener rate limit (token bucket); over it a listener answers 429 with Retry-After")

LIMITS_SPEC = Spec([
    Field("max_request_bytes", Size(), default=10 * 1024 * 1024,
          description="largest request body (413 above it, checked before the body is read)"),
    Field("max_wait_ms", Int(minimum=0), default=180000,
          description="longest a listener call waits for its execution before answering 202"),
    Field("max_concurrent_per_listener", Int(minimum=1), default=100,
          description="executions of one listener at once; above it 503"),
    Field("rate_limit", Object(RATE_SPEC), description="listener rate limit (default: none)"),
], summary="Request limits")

CALLBACKS_SPEC = Spec([
    Field("secret", Str(), secret=True, description="HMAC-SHA256 key of X-Atom-Signature"),
    Field("attempts", Int(minimum=1), default=5, description="delivery attempts"),
    Field("backoff", Duration(), default=0.5, description="first retry delay (doubles each attempt)"),
    Field("max_backoff", Duration(), default=30.0, description="longest retry delay"),
    Field("timeout", Duration(), default=10.0, description="timeout of one delivery"),
], summary="X-Callback-Url deliveries")

LOG_SPEC = Spec([
    Field("format", Enum("text", "json"), default="text", description="log line format"),
    Field("level", Enum("debug", "info", "warning", "error"), default="info", description="log level"),
    Field("access", Bool(), default=False, description="log every HTTP request (off for speed)"),
], summary="Logging")

SHUTDOWN_SPEC = Spec([
    Field("grace_period", Duration(), default=30.0,
          description="how long SIGTERM waits for in-flight executions before aborting them"),
], summary="Graceful shutdown")

WATCH_SPEC = Spec([
    Field("enabled", Bool(), default=True, description="redeploy when component files change"),
    Field("interval", Duration(), default=1.0, description="how often the directory is checked"),
], summary="Hot deployment")

CONFIG_SPEC = Spec([
    Field("name", Str(), default="atom", description="the Atom's name (atomName in records)"),
    Field("components", Str(), default="processes", description="component directory"),
    Field("data_dir", Str(), default=".atom", description="data directory (the SQLite store)"),
    Field("store", Str(), default="sqlite",
          description="execution store: sqlite (<data_dir>/atom.db) or sqlite:///path/to/file.db"),
    Field("server", Object(SERVER_SPEC), default=lambda: _defaults(SERVER_SPEC), description="web server"),
    Field("auth", Object(AUTH_SPEC), default=lambda: _defaults(AUTH_SPEC), description="authentication"),
    Field("limits", Object(LIMITS_SPEC), default=lambda: _defaults(LIMITS_SPEC), description="limits"),
    Field("callbacks", Object(CALLBACKS_SPEC), default=lambda: _defaults(CALLBACKS_SPEC),
          description="callback deliveries"),
    Field("purge_days", Int(minimum=0), default=30,
          description="days execution data is kept (0: never purged)"),
    Field("log", Object(LOG_SPEC), default=lambda: _defaults(LOG_SPEC), description="logging"),
    Field("shutdown", Object(SHUTDOWN_SPEC), default=lambda: _defaults(SHUTDOWN_SPEC),
          description="graceful shutdown"),
    Field("watch", Object(WATCH_SPEC), default=lambda: _defaults(WATCH_SPEC), description="hot deployment"),
], summary="atom.yaml: the Atom's configuration")

CONFIG_NAMES = ("atom.yaml", "atom.yml")


@dataclass(frozen=True)
class ServerConfig:
    host: str
    port: int
    https_port: int
    tls_cert: str | None
    tls_key: str | None
    tls_client_ca: str | None
    base_url: str | None
    #: worker processes sharing the port (1: the Atom is one process)
    workers: int = 1


@dataclass(frozen=True)
class LimitsConfig:
    max_request_bytes: int
    max_wait_ms: int
    max_concurrent_per_listener: int
    rate_limit: Mapping[str, Any] | None


@dataclass(frozen=True)
class CallbacksConfig:
    secret: str | None
    attempts: int
    backoff: float
    max_backoff: float
    timeout: float


@dataclass(frozen=True)
class LogConfig:
    format: str
    level: str
    access: bool


@dataclass(frozen=True)
class Config:
    """A validated configuration. Paths are absolute or relative to the working directory."""

    name: str
    components: Path
    data_dir: Path
    store: str
    server: ServerConfig
    auth: Mapping[str, Any]
    limits: LimitsConfig
    callbacks: CallbacksConfig
    purge_days: int
    log: LogConfig
    shutdown_grace: float
    watch_enabled: bool
    watch_interval: float
    #: the file it was read from (None: defaults and environment only)
    source: str | None = None

    @property
    def store_path(self) -> Path:
        """The SQLite file (`<data_dir>/atom.db` unless `store: sqlite:///path`)."""
        if self.store.startswith("sqlite:///"):
            return Path(self.store[len("sqlite:///"):])
        if self.store.startswith("sqlite:") and self.store != "sqlite":
            return Path(self.store[len("sqlite:"):])
        return self.data_dir / "atom.db"


def env_keys(spec: Spec = CONFIG_SPEC, prefix: tuple[str, ...] = ()) -> dict[str, tuple[tuple[str, ...], Field]]:
    """`ATOM_...` variable name -> (key path, field) for every leaf key of the configuration."""
    out: dict[str, tuple[tuple[str, ...], Field]] = {}
    for f in spec.fields:
        path = (*prefix, f.name)
        if isinstance(f.type, Object):
            out.update(env_keys(f.type.spec, path))
        else:
            out["ATOM_" + "_".join(path).upper()] = (path, f)
    return out


def _env_value(raw: str, f: Field) -> Any:
    t = f.type
    if isinstance(t, (ListOf, MapOf, OneOf)):
        s = raw.strip()
        if s[:1] in ("[", "{"):
            try:
                return orjson.loads(s)
            except orjson.JSONDecodeError:
                return raw
        if isinstance(t, MapOf):  # name=value,name2=value2
            pairs = [p.split("=", 1) for p in s.split(",") if p.strip()]
            if all(len(p) == 2 for p in pairs):
                return {k.strip(): v.strip() for k, v in pairs}
            return raw
        return [p.strip() for p in s.split(",") if p.strip()]
    return raw


def find_config(explicit: str | None, components: str | None = None) -> str | None:
    """The configuration file to read: `explicit`, else ./atom.yaml, else <components>/atom.yaml."""
    if explicit:
        return explicit
    for base in (Path("."), Path(components) if components else None):
        if base is None:
            continue
        for n in CONFIG_NAMES:
            if (base / n).is_file():
                return str(base / n)
    return None


def load_config(path: str | None = None, *, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Read and validate a configuration.

    `path` None means no file (defaults). `env` defaults to `os.environ`; `overrides` maps dotted key
    paths (`server.port`) to values from the command line. Raises LoadError with every problem.
    Relative `components` and `data_dir` from the file are relative to the file's directory.
    """
    env = os.environ if env is None else env
    ctx = CheckContext(env=env)
    node: Any = {}
    file_dir = Path(".")
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise LoadError([Problem(Location(path), f"cannot read configuration: {exc.strerror or exc}")]) from None
        data, problems = load_yaml(text, path)
        if problems:
            raise LoadError(problems)
        if data is not None and not isinstance(data, Mapping):
            raise LoadError([Problem(Location(path, 1, 1), "the configuration must be a mapping of keys")])
        node = data or {}
        file_dir = p.parent
    values = CONFIG_SPEC.check(node, Where(path or "<defaults>", node), ctx)
    from_file = {k for k in ("components", "data_dir") if k in node}

    keys = env_keys()
    for name in sorted(env):
        if not name.startswith("ATOM_") or name not in keys:
            continue
        kpath, f = keys[name]
        got = f.type.check(_env_value(env[name], f), Where(name), Location(name), ctx)
        if got is not MISSING:
            _set(values, kpath, got)
            from_file.discard(kpath[0])
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        kpath = tuple(dotted.split("."))
        _set(values, kpath, value)
        from_file.discard(kpath[0])

    store = values.get("store", "sqlite")
    if not (store == "sqlite" or store.startswith("sqlite:")):
        where = Where(path or "<defaults>", node)
        loc = where.value("store") if "store" in node else Location("ATOM_STORE")
        kind = store.split(":", 1)[0]
        ctx.error(loc, f"store '{kind}' is not available in this version; use sqlite or sqlite:///path/to/atom.db")
    auth = values["auth"]
    if auth.get("type") == "jwt":
        jwt_cfg = auth.get("jwt") or {}
        if not jwt_cfg.get("secret") and not jwt_cfg.get("public_key"):
            ctx.error(Where(path or "<defaults>", node).child("auth").location,
                      "auth type jwt needs jwt.secret or jwt.public_key")
    if auth.get("type") == "basic" and not auth.get("users"):
        ctx.error(Where(path or "<defaults>", node).child("auth").location, "auth type basic needs users")
    if auth.get("type") == "bearer" and not auth.get("tokens"):
        ctx.error(Where(path or "<defaults>", node).child("auth").location, "auth type bearer needs tokens")
    if auth.get("type") == "api_key" and not auth.get("keys"):
        ctx.error(Where(path or "<defaults>", node).child("auth").location, "auth type api_key needs keys")
    tls = values["server"].get("tls") or {}
    if bool(tls.get("cert")) != bool(tls.get("key")):
        ctx.error(Where(path or "<defaults>", node).child("server").location,
                  "server.tls needs both cert and key")
    if ctx.problems:
        raise LoadError(ctx.problems)

    def rel(key: str) -> Path:
        v = Path(values[key])
        if key in from_file and not v.is_absolute():
            return file_dir / v
        return v

    s = values["server"]
    lim = values["limits"]
    cb = values["callbacks"]
    lg = values["log"]
    tls_path = {k: (str(file_dir / v) if path and not Path(v).is_absolute() else v)
                for k, v in tls.items() if v}
    return Config(
        name=values["name"],
        components=rel("components"),
        data_dir=rel("data_dir"),
        store=store,
        server=ServerConfig(s["host"], s["port"], s["https_port"], tls_path.get("cert"), tls_path.get("key"),
                            tls_path.get("client_ca"), s.get("base_url"), s["workers"]),
        auth=auth,
        limits=LimitsConfig(lim["max_request_bytes"], lim["max_wait_ms"], lim["max_concurrent_per_listener"],
                            lim.get("rate_limit")),
        callbacks=CallbacksConfig(cb.get("secret") or None, cb["attempts"], cb["backoff"], cb["max_backoff"],
                                  cb["timeout"]),
        purge_days=values["purge_days"],
        log=LogConfig(lg["format"], lg["level"], lg["access"]),
        shutdown_grace=values["shutdown"]["grace_period"],
        watch_enabled=values["watch"]["enabled"],
        watch_interval=values["watch"]["interval"],
        source=path,
    )


def _set(values: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    cur = values
    for k in path[:-1]:
        nxt = cur.get(k)
        if not isinstance(nxt, dict):
            spec_field = None
            nxt = {}
            if k == "rate_limit":
                spec_field = RATE_SPEC
            if spec_field is not None:
                nxt = {f.name: (f.default() if callable(f.default) else f.default)
                       for f in spec_field.fields if f.default is not MISSING}
            cur[k] = nxt
        cur = nxt
    cur[path[-1]] = value
