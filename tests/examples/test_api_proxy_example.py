"""End to end: the api-proxy example (examples/api-proxy) served by `atom serve` as a subprocess.

The demo weather service (examples/api-proxy/upstream.py) runs as a real aiohttp server on a free
127.0.0.1 port in a thread of this test, with a key of its own; the Atom finds it, and learns that key
and a small per-consumer quota, through the environment variables of the example."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import AtomServer, Response
from tests.examples._support import EXAMPLES, BackgroundApp, background_loop, load_example_module, stop_atom

EXAMPLE = EXAMPLES / "api-proxy"
UPSTREAM_KEY = "upstream-test-key"
OPS_KEY = "ops-test-key"
KEYS = {"acme": "acme-test-key", "globex": "globex-test-key", "initech": "initech-test-key"}
QUOTA = 5  # requests per minute and burst of each consumer


upstream = load_example_module(EXAMPLE / "upstream.py", "api_proxy_upstream")


class Upstream(BackgroundApp):
    """The demo weather service on its own port."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.behaviour = upstream.Behaviour(key=UPSTREAM_KEY)
        super().__init__(loop, lambda: upstream.weather_app(self.behaviour))


class Setup:
    def __init__(self, atom: AtomServer, weather: Upstream) -> None:
        self.atom, self.weather = atom, weather

    def call(self, consumer: str | None, city: str = "Paris", key: str | None = None) -> Response:
        headers = {"X-API-Key": key or KEYS[consumer]} if (consumer or key) else {}
        return self.atom.request("GET", f"/ws/rest/weather/{city}", headers=headers)

    def metrics(self) -> str:
        r = self.atom.request("GET", "/metrics", headers={"X-API-Key": OPS_KEY})
        assert r.status == 200, r.body
        return r.body.decode()


def requests_total(text: str, user: str, status: int) -> float:
    m = re.search(rf'^atom_listener_requests_total\{{process="weather-proxy",status="{status}",user="{user}"\}} '
                  r"(\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("api-proxy")
    with background_loop() as loop:
        weather = Upstream(loop)
        env = {"WEATHER_API_URL": weather.url, "WEATHER_API_KEY": UPSTREAM_KEY, "WEATHER_TIMEOUT": "1s",
               "PROXY_OPS_KEY": OPS_KEY, "CONSUMER_REQUESTS": str(QUOTA), "CONSUMER_PERIOD": "1m",
               "CONSUMER_BURST": str(QUOTA), "ATOM_WATCH_ENABLED": "false",
               **{f"{name.upper()}_API_KEY": key for name, key in KEYS.items()}}
        atom = AtomServer(work, EXAMPLE, env)
        try:
            weather.start()
            atom.start()
            yield Setup(atom, weather)
        finally:
            stop_atom(atom)
            weather.stop()


def test_a_consumer_call_is_proxied_with_the_upstream_key_and_not_its_own(proxy: Setup) -> None:
    r = proxy.call("acme")
    assert r.status == 200, r.body
    assert r.json() == {"city": "Paris", "country": "FR", "units": "metric", "temperature": 18.5,
                        "conditions": "partly cloudy", "humidity": 62, "wind": {"speed": 14.0, "unit": "km/h"},
                        "observedAt": "2026-11-20T09:00:00Z"}
    assert r.header("Content-Type") == "application/json"
    assert r.header("Cache-Control") == "max-age=60"
    assert (r.header("X-RateLimit-Limit"), r.header("X-RateLimit-Remaining")) == (str(QUOTA), str(QUOTA - 1))
    sent = {k.lower(): v for k, v in proxy.weather.behaviour.seen[-1].items()}
    assert sent["x-weather-key"] == UPSTREAM_KEY  # the upstream checks it: a wrong one would be a 502
    assert "x-api-key" not in sent
    assert KEYS["acme"] not in sent.values()
    # the upstream's own answers to the consumer's mistakes pass through
    r = proxy.call("acme", "Atlantis")
    assert (r.status, r.json()["error"]["code"]) == (404, "unknown_city")


def test_a_missing_or_wrong_key_gets_401_and_never_reaches_the_upstream(proxy: Setup) -> None:
    calls = len(proxy.weather.behaviour.seen)
    for key in (None, "wrong-key", OPS_KEY):  # the operator's key opens /metrics, not the listener
        r = proxy.call(None, key=key)
        assert r.status == 401, r.body
        assert r.json()["error"]["code"] == "UNAUTHORIZED"
        assert r.header("X-RateLimit-Limit") is None
    assert len(proxy.weather.behaviour.seen) == calls
    assert proxy.atom.request("GET", "/metrics", headers={"X-API-Key": KEYS["acme"]}).status == 401


def test_a_consumer_over_its_quota_gets_429_while_another_still_passes(proxy: Setup) -> None:
    for left in range(QUOTA - 1, -1, -1):
        r = proxy.call("initech")
        assert (r.status, r.header("X-RateLimit-Remaining")) == (200, str(left)), r.body
    calls = len(proxy.weather.behaviour.seen)
    r = proxy.call("initech")
    assert r.status == 429, r.body
    assert r.json()["error"]["code"] == "RATE_LIMITED"
    assert r.header("Retry-After") == str(60 // QUOTA)
    assert (r.header("X-RateLimit-Limit"), r.header("X-RateLimit-Remaining")) == (str(QUOTA), "0")
    assert len(proxy.weather.behaviour.seen) == calls  # a throttled call costs the upstream nothing
    r = proxy.call("globex", "Tokyo")
    assert (r.status, r.json()["city"]) == (200, "Tokyo")


def test_usage_per_consumer_shows_in_metrics(proxy: Setup) -> None:
    before = proxy.metrics()
    assert proxy.call("acme", "London").status == 200
    assert proxy.call("initech").status == 429
    assert proxy.call(None, key="wrong-key").status == 401
    after = proxy.metrics()
    assert requests_total(after, "acme", 200) == requests_total(before, "acme", 200) + 1
    assert requests_total(after, "initech", 429) == requests_total(before, "initech", 429) + 1
    assert requests_total(after, "anonymous", 401) == requests_total(before, "anonymous", 401) + 1
    assert re.search(r'^atom_listener_throttled_total\{process="weather-proxy"\} [1-9]', after, re.M), after
    assert 'atom_execution_duration_seconds_bucket{le="0.1",process="weather-proxy"}' in after


def test_a_slow_upstream_answers_504(proxy: Setup) -> None:
    proxy.weather.behaviour.delay = 3.0  # longer than WEATHER_TIMEOUT (1s)
    try:
        r = proxy.call("acme")
    finally:
        proxy.weather.behaviour.delay = 0.0
    assert r.status == 504, r.body
    assert r.json() == {"error": {"code": "UPSTREAM_TIMEOUT", "message": "the weather service did not answer in time"}}
    assert proxy.call("acme").status == 200


def test_the_upstream_down_answers_502_then_recovers(proxy: Setup) -> None:
    proxy.weather.stop()
    try:
        r = proxy.call("globex")
    finally:
        proxy.weather.start()
    assert r.status == 502, r.body
    assert r.json() == {"error": {"code": "UPSTREAM_UNREACHABLE", "message": "the weather service cannot be reached"}}
    assert proxy.weather.url not in r.body.decode()  # nothing about the upstream leaks to the consumer
    assert proxy.call("globex").status == 200
