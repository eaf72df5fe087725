"""Wire-level functions of the HTTP connector: URLs, content types, Retry-After, Link headers."""

from __future__ import annotations

import datetime as _dt
import email.utils
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://|^//")


def is_absolute(path: str) -> bool:
    """True for `http://...`, `//host/...` and other URLs that would leave the connection's origin."""
    return bool(_ABSOLUTE.match(path.strip()))


def join_url(base: URL, path: str, params: Iterable[tuple[str, str]] = ()) -> URL:
    """`base` + `path` (which may carry a `?query`) + `params`. The base's own query comes first.

    Raises ValueError for an absolute `path`: operations only reach below the connection's URL.
    """
    if path and is_absolute(path):
        raise ValueError(f"path '{path}' is an absolute URL; paths are relative to the connection url")
    root = str(base.with_query(None).with_fragment(None))
    if path:
        root = root.rstrip("/") + "/" + path.lstrip("/")
    url = URL(root)
    query = [*base.query.items(), *url.query.items(), *params]
    return url.with_query(query) if query else url


def display_url(url: URL, hidden_params: Iterable[str] = ()) -> str:
    """The URL for messages and logs: no user info, and hidden query parameters shown as `***`."""
    url = url.with_user(None).with_password(None) if url.user or url.password else url
    hidden = {p for p in hidden_params if p}
    if hidden and any(k in hidden for k in url.query):
        url = url.with_query([(k, "***" if k in hidden else v) for k, v in url.query.items()])
    return str(url)


def sniff_content_type(data: bytes) -> str:
    """A Content-Type for a document body: JSON, XML, UTF-8 text or bytes, by its first bytes."""
    head = data[:64].lstrip()
    if head[:1] in (b"{", b"["):
        return "application/json"
    if head[:1] == b"<":
        return "application/xml"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    return "text/plain; charset=utf-8"


def parse_retry_after(value: str | None, now: _dt.datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value (delay-seconds or HTTP-date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    now = now or _dt.datetime.now(_dt.UTC)
    return max(0.0, (when - now).total_seconds())


_LINK_SPLIT = re.compile(r",\s*(?=<)")
_LINK = re.compile(r"\s*<([^>]*)>(.*)", re.S)
_LINK_PARAM = re.compile(r"""\s*([A-Za-z0-9!#$&+\-.^_`|~*]+)\s*=\s*(?:"([^"]*)"|([^\s;,]*))""")


def link_next(headers: CIMultiDict[str] | CIMultiDictProxy[str], base: URL) -> URL | None:
    """The `rel="next"` target of the `Link` header(s) (RFC 8288), resolved against `base`."""
    for header in headers.getall("Link", []):
        for part in _LINK_SPLIT.split(header):
            m = _LINK.match(part)
            if not m:
                continue
            target, params = m.groups()
            for pm in _LINK_PARAM.finditer(params):
                name, quoted, bare = pm.groups()
                if name.lower() == "rel":
                    rels = (quoted if quoted is not None else bare).lower().split()
                    if "next" in rels:
                        return base.join(URL(target.strip()))
    return None


@dataclass
class Answer:
    """One HTTP response, read in full."""

    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes
    url: URL
    props: dict[str, str] = field(default_factory=dict)

    def properties(self) -> dict[str, str]:
        """Document properties: `status_code` and `header_<Name>` (repeated headers joined by `, `)."""
        if not self.props:
            props = {"status_code": str(self.status)}
            for name in self.headers:
                key = f"header_{name}"
                if key not in props:
                    props[key] = ", ".join(self.headers.getall(name))
            self.props = props
        return self.props

    def excerpt(self, limit: int = 500) -> str:
        text = self.body[:limit].decode("utf-8", "replace").strip()
        return text + ("..." if len(self.body) > limit else "")
