"""Authentication of listener requests and of the management API.

An `Authenticator` looks at the request headers and returns the user name (which becomes process
property `inuser`), None for anonymous access (type none), or raises `AuthError` (401, or 403 for an
authenticated user a listener does not allow). Credentials are compared in constant time; they never
appear in messages or logs.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt


class AuthError(Exception):
    """Authentication failed: `status` 401 (with a `challenge` for WWW-Authenticate) or 403."""

    def __init__(self, status: int, message: str, challenge: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.challenge = challenge

    @property
    def code(self) -> str:
        return "UNAUTHORIZED" if self.status == 401 else "FORBIDDEN"


class Authenticator:
    """No authentication: every request is anonymous."""

    kind = "none"

    def authenticate(self, headers: Mapping[str, str]) -> str | None:
        return None


def _credentials(value: Any, prefix: str) -> dict[str, str]:
    """A list of secrets (users prefix-1, prefix-2, ...) or a mapping user -> secret, as secret -> user."""
    if isinstance(value, Mapping):
        return {str(v): str(k) for k, v in value.items()}
    return {str(v): f"{prefix}-{i + 1}" for i, v in enumerate(value or [])}


def _match(given: str, secrets: Mapping[str, str]) -> str | None:
    """The user whose secret equals `given`, comparing every secret in constant time."""
    found = None
    g = given.encode()
    for secret, user in secrets.items():
        if hmac.compare_digest(secret.encode(), g):
            found = user
    return found


class BasicAuth(Authenticator):
    kind = "basic"

    def __init__(self, users: Mapping[str, str], realm: str = "atom") -> None:
        self.users = {str(k): str(v) for k, v in users.items()}
        self.challenge = f'Basic realm="{realm}", charset="UTF-8"'

    def authenticate(self, headers: Mapping[str, str]) -> str | None:
        value = headers.get("Authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "basic" or not token:
            raise AuthError(401, "authentication required (HTTP Basic)", self.challenge)
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError(401, "malformed Basic credentials", self.challenge) from None
        expected = self.users.get(user)
        ok = hmac.compare_digest((expected or "\0").encode(), password.encode())
        if not sep or expected is None or not ok:
            raise AuthError(401, "invalid user name or password", self.challenge)
        return user


class BearerAuth(Authenticator):
    kind = "bearer"

    def __init__(self, tokens: Any, realm: str = "atom") -> None:
        self.tokens = _credentials(tokens, "token")
        self.challenge = f'Bearer realm="{realm}"'

    def authenticate(self, headers: Mapping[str, str]) -> str | None:
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(401, "authentication required (Bearer token)", self.challenge)
        user = _match(token.strip(), self.tokens)
        if user is None:
            raise AuthError(401, "invalid token", self.challenge + ', error="invalid_token"')
        return user


class ApiKeyAuth(Authenticator):
    kind = "api_key"

    def __init__(self, header: str, keys: Any) -> None:
        self.header = header
        self.keys = _credentials(keys, "key")

    def authenticate(self, headers: Mapping[str, str]) -> str | None:
        given = headers.get(self.header)
        if not given:
            raise AuthError(401, f"authentication required (header {self.header})")
        user = _match(given.strip(), self.keys)
        if user is None:
            raise AuthError(401, f"invalid key in header {self.header}")
        return user


class JwtAuth(Authenticator):
    kind = "jwt"

    def __init__(self, cfg: Mapping[str, Any], realm: str = "atom") -> None:
        key = cfg.get("secret") or cfg.get("public_key") or ""
        if cfg.get("public_key") and "-----BEGIN" not in key and Path(key).is_file():
            key = Path(key).read_text(encoding="utf-8")
        self.key = key
        self.algorithms = list(cfg.get("algorithms") or ["HS256"])
        self.audience = cfg.get("audience")
        self.issuer = cfg.get("issuer")
        self.user_claim = cfg.get("user_claim", "sub")
        self.leeway = float(cfg.get("leeway", 0.0))
        self.challenge = f'Bearer realm="{realm}"'

    def authenticate(self, headers: Mapping[str, str]) -> str | None:
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(401, "authentication required (Bearer JWT)", self.challenge)
        try:
            claims = jwt.decode(token.strip(), self.key, algorithms=self.algorithms, audience=self.audience,
                                issuer=self.issuer, leeway=self.leeway,
                                options={"verify_aud": self.audience is not None})
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "token expired", self.challenge + ', error="invalid_token"') from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, f"invalid token: {exc}", self.challenge + ', error="invalid_token"') from None
        user = claims.get(self.user_claim)
        if user is None or user == "":
            raise AuthError(401, f"token has no '{self.user_claim}' claim", self.challenge)
        return str(user)


def build_authenticator(cfg: Mapping[str, Any] | None) -> Authenticator:
    """The authenticator of an `auth:` mapping (configuration or listener)."""
    cfg = cfg or {}
    kind = cfg.get("type", "none")
    realm = cfg.get("realm", "atom")
    if kind == "basic":
        return BasicAuth(cfg.get("users") or {}, realm)
    if kind == "bearer":
        return BearerAuth(cfg.get("tokens") or [], realm)
    if kind == "api_key":
        return ApiKeyAuth(cfg.get("header") or "X-API-Key", cfg.get("keys") or [])
    if kind == "jwt":
        return JwtAuth(cfg.get("jwt") or {}, realm)
    return Authenticator()


class ListenerAuth:
    """A listener's authenticator plus its optional allow-list of users (others get 403)."""

    __slots__ = ("allow", "authenticator")

    def __init__(self, authenticator: Authenticator, allow: frozenset[str] | None = None) -> None:
        self.authenticator = authenticator
        self.allow = allow

    def check(self, headers: Mapping[str, str]) -> str | None:
        user = self.authenticator.authenticate(headers)
        if self.allow is not None and (user is None or user not in self.allow):
            raise AuthError(403, f"user '{user}' is not allowed to call this listener")
        return user


def listener_auth(listen_auth: Mapping[str, Any] | None, server_cfg: Mapping[str, Any],
                  server: Authenticator) -> ListenerAuth:
    """Resolve a listener's `auth:` against the server's: `inherit` (default) uses the server's; a type
    without its own users/tokens/keys/jwt takes them from the server's configuration."""
    la = dict(listen_auth or {})
    allow = frozenset(la["allow"]) if la.get("allow") else None
    kind = la.get("type", "inherit")
    if kind == "inherit":
        return ListenerAuth(server, allow)
    if kind == "none":
        return ListenerAuth(Authenticator(), allow)
    merged = {**server_cfg, "type": kind}
    for k in ("users", "tokens", "keys", "header", "jwt"):
        if la.get(k):
            merged[k] = la[k]
    return ListenerAuth(build_authenticator(merged), allow)
