"""Runtime commands of the `atom` CLI: `atom serve` and `atom executions list|show|retry`.

`atom executions` talks to a running Atom's management API (`--url`, default http://127.0.0.1:9090,
or ATOM_URL), authenticating with `--user`/`--password` (ATOM_USER, ATOM_PASSWORD), `--token`
(ATOM_TOKEN, a bearer token or JWT) or `--api-key` (ATOM_API_KEY).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import click

from .errors import LoadError

DEFAULT_URL = "http://127.0.0.1:9090"


@click.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="atom.yaml (default: ./atom.yaml, else DIRECTORY/atom.yaml, else built-in defaults)")
@click.option("--host", default=None, help="address to bind (default 127.0.0.1)")
@click.option("--port", default=None, type=int, help="HTTP port (default 9090)")
@click.option("--workers", default=None, type=click.IntRange(min=1),
              help="worker processes sharing the port (SO_REUSEPORT, Linux; default 1, or server.workers)")
def serve(directory: str | None, config_path: str | None, host: str | None, port: int | None,
          workers: int | None) -> None:
    """Run the Atom: load DIRECTORY (default processes/), serve listeners, the management API and the
    schedules until SIGTERM or Ctrl-C. With --workers N > 1, this process supervises N worker
    processes that share the port."""
    from .config import find_config, load_config
    from .runtime import configure_logging
    from .runtime import serve as run_server

    path = find_config(config_path, directory)
    try:
        cfg = load_config(path, overrides={"components": directory, "server.host": host, "server.port": port,
                                           "server.workers": workers})
    except LoadError as exc:
        for p in exc.problems:
            click.echo(str(p), err=True)
        click.echo(f"{len(exc.problems)} error(s) in the configuration", err=True)
        sys.exit(1)
    if cfg.server.workers > 1:
        from .workers import serve_workers, workers_problem

        problem = workers_problem(cfg)
        if problem is not None:
            click.echo(f"error: {problem}", err=True)
            sys.exit(1)
        configure_logging(cfg.log, supervisor=True)
        sys.exit(serve_workers(cfg))
    configure_logging(cfg.log)
    sys.exit(asyncio.run(run_server(cfg)))


# ------------------------------------------------------------------------------------------- client


class ApiClient:
    """A small synchronous client of the management API (urllib: no extra dependency)."""

    def __init__(self, url: str, user: str | None, password: str | None, token: str | None,
                 api_key: str | None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.headers: dict[str, str] = {}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif user is not None:
            cred = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
            self.headers["Authorization"] = f"Basic {cred}"
        if api_key:
            self.headers["X-API-Key"] = api_key
        self.timeout = timeout

    def call(self, method: str, path: str, query: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        q = {k: v for k, v in (query or {}).items() if v is not None}
        url = self.url + path + ("?" + urllib.parse.urlencode(q) if q else "")
        req = urllib.request.Request(url, method=method, headers={**self.headers, **(headers or {})},
                                     data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items()), exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise click.ClickException(f"cannot reach the Atom at {self.url}: {reason}") from None

    def json(self, method: str, path: str, query: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        status, _, body = self.call(method, path, query, headers)
        try:
            value = json.loads(body) if body else None
        except ValueError:
            value = body.decode("utf-8", "replace")
        if status >= 400:
            err = value.get("error", {}) if isinstance(value, dict) else {}
            msg = err.get("message") if isinstance(err, dict) else None
            raise click.ClickException(f"HTTP {status}: {msg or value}")
        return status, value


def _client_options(fn: Any) -> Any:
    opts = [
        click.option("--url", envvar="ATOM_URL", default=DEFAULT_URL, show_default=True,
                     help="base URL of the Atom (ATOM_URL)"),
        click.option("--user", envvar="ATOM_USER", default=None, help="user for HTTP Basic (ATOM_USER)"),
        click.option("--password", envvar="ATOM_PASSWORD", default=None, help="password (ATOM_PASSWORD)"),
        click.option("--token", envvar="ATOM_TOKEN", default=None, help="bearer token or JWT (ATOM_TOKEN)"),
        click.option("--api-key", envvar="ATOM_API_KEY", default=None, help="API key, sent as X-API-Key"),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _client(url: str, user: str | None, password: str | None, token: str | None, api_key: str | None) -> ApiClient:
    return ApiClient(url, user, password, token, api_key)


@click.group()
def executions() -> None:
    """Query and retry executions of a running Atom (its management API)."""


@executions.command("list")
@_client_options
@click.option("--process", default=None, help="only this process")
@click.option("--status", default=None, help="only this status (COMPLETE, ERROR, INPROCESS, ...)")
@click.option("--since", default=None, help="started at or after (ISO 8601, e.g. 2024-05-01T00:00:00Z)")
@click.option("--until", default=None, help="started before (ISO 8601)")
@click.option("--limit", default=20, show_default=True, type=int, help="records per page")
@click.option("--cursor", default=None, help="page cursor printed by the previous page")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON")
def list_cmd(url: str, user: str | None, password: str | None, token: str | None, api_key: str | None,
             process: str | None, status: str | None, since: str | None, until: str | None, limit: int,
             cursor: str | None, as_json: bool) -> None:
    """List executions, newest first."""
    c = _client(url, user, password, token, api_key)
    _, page = c.json("GET", "/api/v1/executions", {"process": process, "status": status, "since": since,
                                                    "until": until, "limit": limit, "cursor": cursor})
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    items = page.get("items", [])
    if not items:
        click.echo("no executions")
    for r in items:
        click.echo(f"{r['executionTime']}  {r['status']:<13} {r['processName']} v{r['processVersion']}  "
                   f"{r['executionDuration']} ms  {r['executionType']}  {r['executionId']}")
    if page.get("nextCursor"):
        click.echo(f"more: --cursor {page['nextCursor']}")


@executions.command("show")
@_client_options
@click.argument("execution_id")
@click.option("--logs", is_flag=True, help="also print the execution log")
@click.option("--documents", is_flag=True, help="also print the stored documents")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON")
def show_cmd(url: str, user: str | None, password: str | None, token: str | None, api_key: str | None,
             execution_id: str, logs: bool, documents: bool, as_json: bool) -> None:
    """Show one execution record (and optionally its log and documents)."""
    c = _client(url, user, password, token, api_key)
    eid = urllib.parse.quote(execution_id, safe="")
    _, rec = c.json("GET", f"/api/v1/executions/{eid}")
    out: dict[str, Any] = {"record": rec}
    if logs:
        out["logs"] = c.json("GET", f"/api/v1/executions/{eid}/logs")[1].get("items", [])
    if documents:
        out["documents"] = c.json("GET", f"/api/v1/executions/{eid}/documents")[1].get("items", [])
    if as_json:
        click.echo(json.dumps(out if (logs or documents) else rec, indent=2))
        return
    width = max(len(k) for k in rec)
    for k, v in rec.items():
        click.echo(f"{k:<{width}}  {'' if v is None else v}")
    if logs:
        click.echo("log:")
        for e in out["logs"]:
            click.echo(f"  {e['time']} {e['level']:<7} {e.get('shape') or '-'}: {e['message']}")
    if documents:
        click.echo("documents:")
        for d in out["documents"]:
            click.echo(f"  {d['direction']} #{d['index']} ({d['size']} bytes) {d['properties']}")
            text = d["data"] if d["encoding"] == "utf-8" else f"<{d['size']} bytes, base64>"
            click.echo("    " + text.replace("\n", "\n    "))


@executions.command("retry")
@_client_options
@click.argument("execution_id")
@click.option("--wait", "wait_ms", default=None, type=int, help="wait up to this many ms for the result")
def retry_cmd(url: str, user: str | None, password: str | None, token: str | None, api_key: str | None,
              execution_id: str, wait_ms: int | None) -> None:
    """Run a general-mode execution again with its stored inbound documents and properties; prints
    the new execution id (and its response, with --wait, when it finishes in time)."""
    c = _client(url, user, password, token, api_key)
    eid = urllib.parse.quote(execution_id, safe="")
    headers = {"X-Max-Wait": str(wait_ms)} if wait_ms is not None else None
    status, h, body = c.call("POST", f"/api/v1/executions/{eid}/retry", headers=headers)
    if status >= 400:
        try:
            msg = json.loads(body)["error"]["message"]
        except Exception:
            msg = body.decode("utf-8", "replace")
        raise click.ClickException(f"HTTP {status}: {msg}")
    new_id = h.get("X-Execution-Id", "")
    click.echo(new_id)
    if status != 202 and body:
        click.echo(body.decode("utf-8", "replace"))


def register(main: click.Group) -> None:
    """Add the runtime commands to the `atom` command group."""
    main.add_command(serve)
    main.add_command(executions)
