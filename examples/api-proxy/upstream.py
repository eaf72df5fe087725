"""A small weather service standing in for the external API behind the api-proxy example.

Serves, on 127.0.0.1 only:

- ``GET /v1/current?city=<name>[&units=metric|imperial]``: the current weather of a city as JSON;
  ``404`` for a city it does not know, ``400`` for a missing city or unknown units;
- every request must carry the service's own key in ``X-Weather-Key`` (``401`` otherwise), the key
  the Atom adds for its consumers (``WEATHER_API_KEY`` in the connection ``weather-api.yaml``).

Run from the repository root, with the defaults the example's connection expects::

    .venv/bin/python examples/api-proxy/upstream.py
    .venv/bin/python examples/api-proxy/upstream.py --port 9181 --key s3cret
    .venv/bin/python examples/api-proxy/upstream.py --delay 10    # answer after 10 s: try the timeouts

Ctrl-C (or SIGTERM) stops it. The tests import ``weather_app`` and ``Behaviour``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DEFAULT_KEY = "upstream-demo-key"

#: city (lower case) -> (name, country, temperature in °C, conditions, humidity %, wind km/h)
CITIES: dict[str, tuple[str, str, float, str, int, float]] = {
    "paris": ("Paris", "FR", 18.5, "partly cloudy", 62, 14.0),
    "london": ("London", "GB", 14.0, "light rain", 81, 22.5),
    "tokyo": ("Tokyo", "JP", 24.0, "clear", 55, 9.0),
    "reykjavik": ("Reykjavik", "IS", 4.5, "snow showers", 88, 38.0),
}


@dataclass
class Behaviour:
    """What the service does, changeable while it runs (the tests slow it down or change its key)."""

    key: str = DEFAULT_KEY
    delay: float = 0.0
    #: the headers of every request received, oldest first
    seen: list[dict[str, str]] = field(default_factory=list)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def weather_app(behaviour: Behaviour) -> web.Application:
    """The weather service as an aiohttp application."""

    async def current(request: web.Request) -> web.Response:
        behaviour.seen.append(dict(request.headers))
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        if request.headers.get("X-Weather-Key") != behaviour.key:
            return _error(401, "invalid_key", "a valid X-Weather-Key header is required")
        name = request.query.get("city", "").strip()
        units = request.query.get("units", "metric")
        if not name:
            return _error(400, "missing_city", "query parameter 'city' is required")
        if units not in ("metric", "imperial"):
            return _error(400, "bad_units", f"units must be metric or imperial, not '{units}'")
        city = CITIES.get(name.lower())
        if city is None:
            return _error(404, "unknown_city", f"no weather station for '{name}'")
        label, country, celsius, conditions, humidity, wind_kmh = city
        metric = units == "metric"
        body: dict[str, Any] = {
            "city": label,
            "country": country,
            "units": units,
            "temperature": celsius if metric else round(celsius * 9 / 5 + 32, 1),
            "conditions": conditions,
            "humidity": humidity,
            "wind": {"speed": wind_kmh if metric else round(wind_kmh / 1.609, 1),
                     "unit": "km/h" if metric else "mph"},
            "observedAt": "2026-11-20T09:00:00Z",
        }
        return web.json_response(body, headers={"Cache-Control": "max-age=60"})

    app = web.Application()
    app.router.add_get("/v1/current", current)
    return app


async def _serve(port: int, behaviour: Behaviour) -> None:
    runner = web.AppRunner(weather_app(behaviour))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"weather service on http://127.0.0.1:{port}/v1/current (key in X-Weather-Key)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="The demo weather service of the api-proxy example.")
    parser.add_argument("--port", type=int, default=8081, help="port on 127.0.0.1 (default 8081)")
    parser.add_argument("--key", default=os.environ.get("WEATHER_API_KEY", DEFAULT_KEY),
                        help="the key callers must send in X-Weather-Key (default: $WEATHER_API_KEY, "
                             f"else {DEFAULT_KEY})")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each answer")
    args = parser.parse_args()
    asyncio.run(_serve(args.port, Behaviour(key=args.key, delay=args.delay)))


if __name__ == "__main__":
    main()
