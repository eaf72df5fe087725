"""X-Callback-Url deliveries: on completion the Atom POSTs the execution record and its response.

Body (JSON): `{"record": {...}, "response": {"status", "headers", "body", "bodyEncoding"}}`. Headers:
`Content-Type: application/json`, `X-Execution-Id`, and, when `callbacks.secret` is configured,
`X-Atom-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>`. A delivery is retried with
exponential back-off on network errors, timeouts, 408, 429 and 5xx; other answers end it. Failures are
logged with the URL and the execution id; they never affect the execution.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from . import metrics
from .config import CallbacksConfig
from .web_http import HttpResult

log = logging.getLogger("atom.callbacks")


def sign(secret: str, body: bytes) -> str:
    """The X-Atom-Signature value of a body: `sha256=<hex HMAC-SHA256>`."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    """Whether `signature` (an X-Atom-Signature value) signs `body` with `secret`."""
    return hmac.compare_digest(sign(secret, body), signature.strip())


def callback_body(record: dict[str, Any], response: HttpResult | None) -> bytes:
    return orjson.dumps({"record": record, "response": response.to_dict() if response is not None else None},
                        option=orjson.OPT_NON_STR_KEYS)


def check_url(url: str) -> str:
    """Validate an X-Callback-Url value; raises ValueError with a user-facing message."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"X-Callback-Url must be an absolute http or https URL, got '{url}'")
    return url.strip()


class CallbackSender:
    """Delivers callbacks in background tasks; `close()` waits (bounded) for those under way."""

    def __init__(self, cfg: CallbacksConfig) -> None:
        self.cfg = cfg
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def deliver(self, url: str, record: dict[str, Any], response: HttpResult | None) -> None:
        task = asyncio.ensure_future(self._deliver(url, record, response))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.cfg.timeout))
        return self._session

    async def _deliver(self, url: str, record: dict[str, Any], response: HttpResult | None) -> None:
        body = callback_body(record, response)
        eid = str(record.get("executionId", ""))
        headers = {"Content-Type": "application/json", "X-Execution-Id": eid}
        if self.cfg.secret:
            headers["X-Atom-Signature"] = sign(self.cfg.secret, body)
        delay = self.cfg.backoff
        for attempt in range(1, self.cfg.attempts + 1):
            why = ""
            try:
                async with self._client().post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status < 300:
                        metrics.CALLBACKS.labels("delivered").inc()
                        return
                    why = f"HTTP {resp.status}"
                    if resp.status < 500 and resp.status not in (408, 429):
                        log.warning("callback of execution %s to %s refused: %s (not retried)", eid, url, why)
                        metrics.CALLBACKS.labels("refused").inc()
                        return
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if attempt < self.cfg.attempts:
                log.info("callback of execution %s to %s failed (%s), attempt %d of %d; retrying in %.1f s",
                         eid, url, why, attempt, self.cfg.attempts, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cfg.max_backoff)
            else:
                log.error("callback of execution %s to %s failed after %d attempt(s): %s", eid, url,
                          self.cfg.attempts, why)
                metrics.CALLBACKS.labels("failed").inc()

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def close(self, timeout: float) -> None:
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=max(timeout, 0.0))
            for t in late:
                t.cancel()
            if late:
                log.warning("%d callback delivery(ies) still under way at shutdown were abandoned", len(late))
                await asyncio.gather(*late, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
