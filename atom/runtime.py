"""The Atom runtime: the shared web server, the store, schedules, hot deployment and shutdown.

`Runtime(config)` wires the engine to an execution store, builds the aiohttp application (listeners,
management API, `/metrics`, `/_admin/status`) and owns the lifecycle: `start()` opens the store
(marking executions a crash left INPROCESS as ABORTED, unless `recover=False`), loads the component
directory, mounts listeners and schedules, and starts watching the directory; `drain()` stops
accepting work (503) and lets in-flight executions finish, bounded by the grace period; `stop()`
flushes and closes.

Executions started by the runtime are *jobs*: tasks detached from the request that started them, so
a client that disconnects never cancels an execution. A request waits for its job up to X-Max-Wait
(or `limits.max_wait_ms`), then answers 202 with a status link; the INPROCESS record is made
durable before the 202 is sent.

`serve(config)` hosts the application with `AppRunner`/`TCPSite` beside the scheduler on one event
loop, and handles SIGTERM/SIGINT. `serve(config, role)` runs one worker of a multi-process Atom (see
`atom.workers`): its sites share the port with the other workers (SO_REUSEPORT), it leaves the
startup recovery to the supervisor, and only the first worker runs the schedules and the purge.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import ipaddress
import json
import logging
import os
import signal
import sqlite3
import ssl
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Generator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import metrics
from .auth import build_authenticator
from .callbacks import CallbackSender, check_url
from .config import Config, LogConfig
from .engine import Engine, Execution
from .errors import LoadError
from .loader import load_directory
from .model import Deployment, ProcessDef
from .scheduler import Scheduler
from .store import SqliteStore, Store, days_ago
from .watch import DirectoryWatcher, snapshot
from .web_api import ManagementApi
from .web_http import HttpResult, base_url, error_result, json_response
from .web_listeners import ListenerRoutes, ListenerTable, RateLimiter, build_result, soap_fault_result

log = logging.getLogger("atom.runtime")


class Job:
    """An execution started by the runtime, and the HTTP response it produces (None for schedules)."""

    __slots__ = ("callback", "ex", "output", "response", "soap", "soap_version", "task", "went_async")

    def __init__(self, ex: Execution, output: str | None, soap: Any, soap_version: str | None,
                 callback: str | None) -> None:
        self.ex = ex
        self.output = output
        self.soap = soap
        self.soap_version = soap_version
        self.callback = callback
        self.response: HttpResult | None = None
        self.went_async = False
        self.task: asyncio.Task[None] | None = None


class Runtime:
    """One Atom. `app` is its aiohttp application; by default the application's startup runs
    `start()` and its cleanup runs `stop()` (what `aiohttp_client(runtime.app)` needs).

    In a multi-process Atom each worker process has its own Runtime: `worker` is its index (0 for the
    first) among `workers`; `recover=False` leaves executions other processes have in flight alone at
    store open; `run_schedules=False` keeps the schedules (next run times) without firing them and
    does not purge."""

    def __init__(self, config: Config, *, deployment: Deployment | None = None, store: Store | None = None,
                 start_with_app: bool = True, worker: int = 0, workers: int = 1, recover: bool = True,
                 run_schedules: bool = True, node_id: str | None = None) -> None:
        self.config = config
        self.state = "starting"
        self.worker = worker
        self.workers = workers
        self.recover = recover
        self.run_schedules = run_schedules
        self.engine = Engine(Deployment.empty(str(config.components)), atom_name=config.name, node_id=node_id)
        self.store: Store = store or SqliteStore(config.store_path, atom_name=config.name,
                                                 node_id=self.engine.node_id)
        self.engine.recorder = self.store
        self.server_auth = build_authenticator(config.auth)
        self.listeners = ListenerTable(self.engine.deployment, config.auth, self.server_auth,
                                       config.limits.max_concurrent_per_listener)
        rl = config.limits.rate_limit
        self.rate_limiter = RateLimiter(rl) if rl and rl.get("requests") else None
        self.callbacks = CallbackSender(config.callbacks)
        self.scheduler = Scheduler(self._fire_schedule, fires=run_schedules)
        self.watcher: DirectoryWatcher | None = None
        self.jobs: dict[str, Job] = {}
        self.active: dict[str, int] = {}
        self.deploy_problems: list[str] = []
        self.aborted_at_start = 0
        self._initial = deployment
        self._start_with_app = start_with_app
        self._purge_task: asyncio.Task[None] | None = None
        self._reload_lock: asyncio.Lock | None = None
        self._force = asyncio.Event()
        self._stopped = False
        self._counters: dict[tuple[str, int], Any] = {}
        #: ids of the deployed process definitions that can start eagerly (see runs_without_io)
        self._pure: set[int] = set()
        self.app = self._build_app()

    # -------------------------------------------------------------------------------- app
    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.limits.max_request_bytes)
        app[RUNTIME] = self
        app.on_response_prepare.append(_server_header)
        ListenerRoutes(self).add_to(app)
        ManagementApi(self).add_to(app)
        app.router.add_get("/_admin/status", self.status)
        app.cleanup_ctx.append(self._lifecycle)
        return app

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        if self._start_with_app:
            await self.start()
        yield
        await self.stop()

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def count(self, route: str, status: int) -> None:
        c = self._counters.get((route, status))
        if c is None:
            c = self._counters[(route, status)] = metrics.REQUESTS.labels(route, str(status))
        c.inc()

    def unavailable_result(self) -> HttpResult:
        what = {"starting": "STARTING", "stopping": "STOPPING", "stopped": "STOPPING"}.get(self.state, "UNAVAILABLE")
        msg = "the Atom is starting" if what == "STARTING" else "the Atom is stopping"
        return error_result(503, what, msg, headers={"Retry-After": "1"})

    def unavailable(self) -> web.Response:
        return self.unavailable_result().to_web()

    async def status(self, request: web.Request) -> web.Response:
        dep = self.engine.deployment
        body = {
            "status": self.state, "atomName": self.config.name, "nodeId": self.engine.node_id,
            "generation": dep.generation, "processes": len(dep.processes), "inFlight": len(self.jobs),
            "deploymentProblems": self.deploy_problems, "worker": self.worker, "workers": self.workers,
        }
        return json_response(body, 200 if self.ready else 503)

    # -------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Open the store, deploy the components, start schedules and the watcher. Raises LoadError
        when the component directory is invalid (nothing is left running then)."""
        self._reload_lock = asyncio.Lock()
        self.aborted_at_start = await self.store.open(recover=self.recover)
        directory = self.config.components
        snap = await asyncio.to_thread(snapshot, directory) if self.config.watch_enabled else ()
        try:
            dep = self._initial if self._initial is not None else await asyncio.to_thread(load_directory, directory)
        except LoadError:
            await self.store.close()
            self.state = "stopped"
            self._stopped = True
            raise
        self.scheduler.start()
        self._apply(dep)
        if self.config.watch_enabled:
            self.watcher = DirectoryWatcher(directory, self.config.watch_interval, self.reload)
            await self.watcher.start(snap)
        if self.config.purge_days and self.run_schedules:
            self._purge_task = asyncio.ensure_future(self._purge_loop())
        self._warn_exposure()
        self.state = "ready"
        log.info("Atom '%s' ready: %d process(es) deployed from %s", self.config.name, len(dep.processes),
                 directory)

    def _warn_exposure(self) -> None:
        host = self.config.server.host
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback and self.config.auth.get("type", "none") == "none":
            log.warning("SECURITY: the Atom listens on %s without authentication: anyone who can reach it can "
                        "run processes and read execution data. Configure auth in atom.yaml or bind 127.0.0.1.",
                        host)

    async def drain(self, grace: float | None = None) -> None:
        """Stop accepting work (503) and wait for in-flight executions, at most `grace` seconds;
        executions still running then are cancelled and recorded ABORTED."""
        if self.state in ("stopping", "stopped"):
            return
        grace = self.config.shutdown_grace if grace is None else grace
        self.state = "stopping"
        self.scheduler.pause()
        if self.watcher is not None:
            await self.watcher.stop()
        tasks = [j.task for j in self.jobs.values() if j.task is not None]
        if tasks:
            log.info("waiting for %d execution(s) in flight (at most %.0f s)", len(tasks), grace)
            force = asyncio.ensure_future(self._force.wait())
            try:
                deadline = time.monotonic() + grace
                pending = set(tasks)
                while pending and not self._force.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    done, _ = await asyncio.wait([*pending, force], timeout=left,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    pending -= done
            finally:
                force.cancel()
            late = [t for t in tasks if not t.done()]
            if late:
                log.warning("%d execution(s) did not finish within the grace period and are aborted", len(late))
                for t in late:
                    t.cancel()
                await asyncio.gather(*late, return_exceptions=True)

    def force_stop(self) -> None:
        """End the drain at once (a second SIGTERM/SIGINT)."""
        self._force.set()

    async def stop(self) -> None:
        """Drain, then stop schedules, callbacks, connections and the store (flushing it)."""
        if self._stopped:
            return
        self._stopped = True
        t0 = time.monotonic()
        await self.drain()
        self.scheduler.shutdown()
        if self._purge_task is not None:
            self._purge_task.cancel()
            await asyncio.gather(self._purge_task, return_exceptions=True)
        left = max(1.0, min(10.0, self.config.shutdown_grace - (time.monotonic() - t0)))
        await self.callbacks.close(left)
        await self.engine.stop()
        await self.store.close()
        self.state = "stopped"
        log.info("Atom '%s' stopped", self.config.name)

    async def _purge_loop(self) -> None:
        while True:
            try:
                n = await self.store.purge(days_ago(self.config.purge_days))
                if n:
                    log.info("purged %d execution(s) older than %d day(s)", n, self.config.purge_days)
            except Exception:
                log.exception("purging the store failed")
            await asyncio.sleep(3600)

    # -------------------------------------------------------------------------------- deployment
    def _apply(self, dep: Deployment) -> None:
        """Swap in a deployment: engine, listener table and schedules change together."""
        self.engine.deploy(dep)
        self.listeners = ListenerTable(dep, self.config.auth, self.server_auth,
                                       self.config.limits.max_concurrent_per_listener)
        self.scheduler.sync(dep)
        self._pure = {id(p) for p in dep.processes.values() if runs_without_io(p, dep)}
        self.deploy_problems = []

    async def reload(self) -> bool:
        """Load the component directory again; deploy it when valid. An invalid directory is reported
        (every located problem, logged at error level) and the current deployment keeps serving."""
        assert self._reload_lock is not None
        async with self._reload_lock:
            if self.state != "ready":
                return False
            old = self.engine.deployment
            try:
                dep = await asyncio.to_thread(load_directory, self.config.components, previous=old)
            except LoadError as exc:
                self.deploy_problems = [str(p) for p in exc.problems]
                metrics.DEPLOYMENTS.labels("rejected").inc()
                log.error("the change to %s is not deployed (%d error(s)); the previous version keeps serving:\n%s",
                          self.config.components, len(exc.problems), "\n".join(self.deploy_problems))
                return False
            if self.state != "ready":
                return False
            self._apply(dep)
            metrics.DEPLOYMENTS.labels("deployed").inc()
            changes = []
            for name, p in sorted(dep.processes.items()):
                was = old.processes.get(name)
                if was is None:
                    changes.append(f"+{name} v{p.version}")
                elif was.version != p.version:
                    changes.append(f"~{name} v{p.version}")
            changes += [f"-{name}" for name in sorted(old.processes) if name not in dep.processes]
            log.info("deployment %d: %s", dep.generation, ", ".join(changes) or "no process changed")
            return True

    # -------------------------------------------------------------------------------- jobs
    def admit(self, pdef: ProcessDef, limit: int | None) -> HttpResult | None:
        """Count a new execution of `pdef`, or say why it cannot start now (409: allow_simultaneous is
        false and one is in process; 503: the listener is at its concurrency limit)."""
        n = self.active.get(pdef.name, 0)
        if n and not pdef.allow_simultaneous:
            return error_result(409, "ALREADY_RUNNING", f"process '{pdef.name}' does not allow simultaneous "
                                "executions (allow_simultaneous: false) and one is in process",
                                headers={"Retry-After": "1"})
        if limit is not None and n >= limit:
            return error_result(503, "SATURATED", f"process '{pdef.name}' is at its limit of {limit} concurrent "
                                "executions", headers={"Retry-After": "1"})
        self.active[pdef.name] = n + 1
        return None

    def release(self, pdef: ProcessDef) -> None:
        n = self.active.get(pdef.name, 0) - 1
        if n > 0:
            self.active[pdef.name] = n
        else:
            self.active.pop(pdef.name, None)

    def callback_url(self, value: str | None) -> str | None:
        return check_url(value) if value else None

    def start_job(self, ex: Execution, *, output: str | None, soap: Any = None, soap_version: str | None = None,
                  callback: str | None = None, admitted: bool = False) -> Job:
        """Run an execution in a task of its own. `admitted`: `admit()` already counted it."""
        if not admitted:
            self.active[ex.process.name] = self.active.get(ex.process.name, 0) + 1
        job = Job(ex, output, soap, soap_version, callback)
        self.jobs[ex.id] = job
        if id(ex.process) in self._pure:
            job.task = start_eagerly(self._run_job(job))
        else:
            job.task = asyncio.ensure_future(self._run_job(job))
        return job

    async def _run_job(self, job: Job) -> None:
        ex = job.ex
        try:
            await self.engine.run(ex)
        except asyncio.CancelledError:
            pass  # the execution is recorded ABORTED; still answer the waiting request
        except Exception:
            log.exception("execution %s of process '%s' failed in the runtime", ex.id, ex.process.name)
            if not ex.finished:
                ex.status, ex.message = "ERROR", "internal error of the runtime"
        try:
            if job.output is not None:
                job.response = self._result(job)
                if job.went_async or ex.keeps_documents:
                    self.store.save_response(ex.id, job.response)
        except Exception:
            log.exception("building the response of execution %s failed", ex.id)
            job.response = error_result(500, "INTERNAL_ERROR", "the response could not be built", ex.id)
        finally:
            self.release(ex.process)
            self.jobs.pop(ex.id, None)
        if job.callback:
            self.callbacks.deliver(job.callback, ex.record(), job.response)

    def _result(self, job: Job) -> HttpResult:
        ex = job.ex
        result = build_result(ex, job.output or "data")
        if job.soap_version is None:
            return result
        if ex.status in ("ERROR", "ABORTED"):
            return soap_fault_result(job.soap_version, result)
        from . import soap

        try:
            body = soap.build_response(job.soap_version, job.soap or {}, ex.returned)
        except soap.SoapError as exc:
            err = error_result(500, "PROCESS_ERROR", exc.message, ex.id)
            return soap_fault_result(job.soap_version, err)
        headers = {k: v for k, v in result.headers.items() if k.lower() != "content-type"}
        headers["Content-Type"] = soap.content_type(job.soap_version)
        return HttpResult(result.status, headers, body)

    async def answer(self, request: web.Request, job: Job, max_wait: float,
                     force_async: bool = False) -> web.StreamResponse:
        """The job's response if it finishes within `max_wait` seconds (and not `force_async`); else
        202 with a status link (the record durable first)."""
        task = job.task
        if task is not None and not task.done() and max_wait > 0:
            await asyncio.wait((task,), timeout=max_wait)
        finished = task is None or task.done()
        if finished and job.response is not None and not force_async:
            return job.response.to_web()
        job.went_async = True
        if finished and job.response is not None and not job.ex.keeps_documents:
            self.store.save_response(job.ex.id, job.response)
        await self.store.persist(job.ex)
        metrics.ASYNC_RESPONSES.labels(job.ex.process.name).inc()
        return self.accepted(request, job.ex.id)

    def accepted(self, request: web.Request, execution_id: str) -> web.Response:
        link = f"{base_url(request, self.config.server.base_url)}/api/v1/executions/{execution_id}"
        headers = {"X-Execution-Id": execution_id, "X-Execution-Status-Link": link, "Location": link,
                   "Retry-After": "1"}
        return json_response({"executionId": execution_id, "status": "INPROCESS", "statusLink": link}, 202, headers)

    async def read_body(self, request: web.Request) -> bytes | web.Response:
        """The request body, or a 413 response (Content-Length checked before reading)."""
        limit = self.config.limits.max_request_bytes
        cl = request.content_length
        if cl is not None and cl > limit:
            return self._too_large(f"{cl} bytes")
        chunks, size = [], 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                return self._too_large("the request body")
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, what: str) -> web.Response:
        limit = self.config.limits.max_request_bytes
        return error_result(413, "PAYLOAD_TOO_LARGE", f"{what} is over the limit of {limit} bytes",
                            headers={"Connection": "close"}).to_web()

    # -------------------------------------------------------------------------------- schedules
    async def _fire_schedule(self, name: str) -> None:
        if not self.ready:
            return
        pdef = self.engine.deployment.processes.get(name)
        if pdef is None:
            return
        if not pdef.allow_simultaneous and self.active.get(name):
            log.warning("process '%s': scheduled run skipped, the previous run is still in process "
                        "(allow_simultaneous: false)", name)
            metrics.SCHEDULE_RUNS.labels(name, "skipped").inc()
            return
        metrics.SCHEDULE_RUNS.labels(name, "started").inc()
        ex = self.engine.new_execution(pdef, None, execution_type="exec_sched")
        self.start_job(ex, output=None)


RUNTIME = web.AppKey("atom_runtime", Runtime)


#: shape kinds that do no I/O of their own (process_call is checked through the process it calls)
PURE_SHAPES = frozenset({"map", "decision", "branch", "route", "set_properties", "message", "notify", "split",
                         "combine", "cache", "try_catch", "flow_control", "exception", "stop", "return"})


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    """Name the server without the versions of Python and aiohttp (they only help an attacker)."""
    response.headers["Server"] = "Atom"


def runs_without_io(pdef: ProcessDef, dep: Deployment, seen: frozenset[str] = frozenset()) -> bool:
    """Whether a process only computes: no connector (start or shape), no unknown shape kind, and every
    process it calls computes only. Such executions may start eagerly in the request's task: nothing
    in them looks at the current task (as I/O timeouts do)."""
    if pdef.start.kind == "connector" or pdef.name in seen:
        return False
    for shape in pdef.shapes.values():
        if shape.kind == "process_call":
            callee = dep.processes.get(getattr(shape, "process", ""))
            if callee is None or not runs_without_io(callee, dep, seen | {pdef.name}):
                return False
        elif shape.kind not in PURE_SHAPES:
            return False
    return True


def start_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run a coroutine up to its first suspension right now; None when it finished without one
    (most executions: shapes that do no I/O never suspend), else a task that carries on with it.

    This saves a task, a loop iteration and a wait per listener request. Like a task, what goes on
    after the first suspension is detached from the caller: cancelling the caller does not cancel it.
    """
    try:
        first = coro.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_resume(coro, first))


class _Continue:
    """Awaitable going on with a started coroutine whose last step yielded `first`."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, None], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, None]:
        nxt = self.first
        coro = self.coro
        while True:
            try:
                sent = yield nxt
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation and the like go to the coroutine
                try:
                    nxt = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    nxt = coro.send(sent)
                except StopIteration:
                    return


async def _resume(coro: Coroutine[Any, Any, None], first: Any) -> None:
    await _Continue(coro, first)


# ------------------------------------------------------------------------------------------- logging


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any); `extra`
    fields (e.g. the worker of a multi-process Atom) come after the level."""

    def __init__(self, extra: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.extra = dict(extra or {})

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname, **self.extra, "logger": record.name, "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(cfg: LogConfig, *, worker: int | None = None, supervisor: bool = False) -> None:
    """Log to stderr in the configured format and level (the process-wide logging setup of `serve`).
    A worker of a multi-process Atom names itself in every line (`"worker": 1` in JSON, `[worker 1]`
    in text); so does the supervisor (`"supervisor": true`, `[supervisor]`)."""
    handler = logging.StreamHandler(sys.stderr)
    extra: dict[str, Any] = {}
    tag = ""
    if worker is not None:
        extra, tag = {"worker": worker}, f"[worker {worker}] "
    elif supervisor:
        extra, tag = {"supervisor": True}, "[supervisor] "
    if cfg.format == "json":
        handler.setFormatter(JsonFormatter(extra))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)-7s {tag}%(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(cfg.level.upper())
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("aiohttp.access").setLevel(logging.INFO if cfg.access else logging.WARNING)


# ------------------------------------------------------------------------------------------- serve


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    s = config.server
    if not (s.tls_cert and s.tls_key):
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(s.tls_cert, s.tls_key)
    if s.tls_client_ca:
        ctx.load_verify_locations(s.tls_client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@dataclass(frozen=True)
class WorkerRole:
    """`serve` as worker `index` (0 for the first) of `count` worker processes sharing the port."""

    index: int
    count: int
    #: the engine's node id (nodeId of the records): how the supervisor finds the executions a worker
    #: that died left INPROCESS
    node_id: str | None = None
    #: a file descriptor that reaches end of file when the supervisor is gone: the worker then stops
    lifeline: int | None = None


async def _start_sites(runner: web.AppRunner, config: Config, ctx: ssl.SSLContext | None,
                       reuse_port: bool) -> list[web.TCPSite]:
    host = config.server.host
    reuse = True if reuse_port else None
    site = web.TCPSite(runner, host, config.server.port, reuse_port=reuse)
    await site.start()
    sites = [site]
    if ctx is not None:
        tls_site = web.TCPSite(runner, host, config.server.https_port, ssl_context=ctx, reuse_port=reuse)
        await tls_site.start()
        sites.append(tls_site)
    return sites


async def serve(config: Config, role: WorkerRole | None = None) -> int:
    """Run the Atom until SIGTERM/SIGINT. Returns the exit status: 0 after a clean stop, 1 when it
    cannot start (invalid components, port in use, bad TLS files).

    With a `role` it is one worker of a multi-process Atom: it binds its sites with SO_REUSEPORT once
    it is ready (a worker that starts or restarts never answers 503 while the others serve), does
    not mark INPROCESS executions ABORTED at start (other workers may be running them), runs the
    schedules and the purge only as the first worker, and stops when its supervisor is gone."""
    if role is None:
        rt = Runtime(config, start_with_app=False)
    else:
        rt = Runtime(config, start_with_app=False, worker=role.index, workers=role.count, recover=False,
                     run_schedules=role.index == 0, node_id=role.node_id)
    runner = web.AppRunner(rt.app, handle_signals=False, shutdown_timeout=5.0,
                           access_log=logging.getLogger("aiohttp.access") if config.log.access else None)
    await runner.setup()
    host = config.server.host
    sites: list[web.TCPSite] = []
    try:
        ctx = _ssl_context(config)
        if role is None:
            sites = await _start_sites(runner, config, ctx, reuse_port=False)
    except (OSError, ssl.SSLError) as exc:
        log.error("cannot start the web server on %s: %s", host, exc)
        await runner.cleanup()
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signame: str) -> None:
        if stop.is_set():
            log.warning("%s again: aborting executions still in flight", signame)
            rt.force_stop()
        else:
            log.info("%s received: stopping (in-flight executions may take up to %.0f s)", signame,
                     config.shutdown_grace)
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    lifeline = role.lifeline if role is not None else None
    if lifeline is not None:
        _watch_lifeline(loop, lifeline, stop)
    try:
        await rt.start()
    except LoadError as exc:
        for p in exc.problems:
            print(str(p), file=sys.stderr)
        print(f"{len(exc.problems)} error(s): the Atom did not start", file=sys.stderr)
        await runner.cleanup()
        return 1
    except (OSError, sqlite3.Error) as exc:
        log.error("cannot open the execution store %s: %s", config.store_path, exc)
        await runner.cleanup()
        return 1
    if role is not None and not stop.is_set():
        try:
            sites = await _start_sites(runner, config, ctx, reuse_port=True)
        except (OSError, ssl.SSLError) as exc:
            log.error("cannot start the web server on %s: %s", host, exc)
            await runner.cleanup()
            return 1
    # what is loaded now lives as long as the process: keep it out of the garbage collector's full
    # passes (they would otherwise walk every module, template and compiled shape again and again)
    gc.collect()
    gc.freeze()
    for s in sites:
        for addr in _addresses(s):
            log.info("listening on %s", addr)
    await stop.wait()
    await rt.drain()
    await runner.cleanup()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    if lifeline is not None:
        loop.remove_reader(lifeline)
    return 0


def _watch_lifeline(loop: asyncio.AbstractEventLoop, fd: int, stop: asyncio.Event) -> None:
    """Set `stop` when `fd` (the read end of a pipe the supervisor holds open) reaches end of file."""
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            return
        loop.remove_reader(fd)
        if not stop.is_set():
            log.warning("the supervisor is gone: stopping")
            stop.set()

    loop.add_reader(fd, readable)


def _addresses(site: web.TCPSite) -> list[str]:
    server: Any = getattr(site, "_server", None)
    scheme = "https" if getattr(site, "_ssl_context", None) else "http"
    out = []
    for sock in getattr(server, "sockets", None) or []:
        h, p = sock.getsockname()[:2]
        out.append(f"{scheme}://{h}:{p}")
    return out or [site.name]
