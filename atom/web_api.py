"""The management API (`/api/v1`) and `GET /metrics`.

Every route authenticates with the server's `auth` (atom.yaml); errors use the JSON envelope.
Collections answer `{"items": [...]}`; the execution list adds `"nextCursor"` (null on the last
page). Executions started here (`POST /api/v1/processes/{name}/executions`, `.../retry`) answer 202
with the id by default; with `X-Max-Wait` they wait that long and answer what a listener call would.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import metrics
from .auth import AuthError
from .document import Document
from .engine import STATUSES
from .loader import listener_key
from .model import ProcessDef
from .scheduler import schedule_of
from .store import CursorError, ListQuery, parse_time
from .web_http import base_url, error_response, json_response, parse_max_wait
from .web_listeners import InputError, read_documents

if TYPE_CHECKING:
    from .runtime import Runtime

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_LIMIT = 1000


class ManagementApi:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def add_to(self, app: web.Application) -> None:
        r = app.router
        a = self._authed
        r.add_get("/api/v1/processes", a(self.processes))
        r.add_get("/api/v1/processes/{name}", a(self.process))
        r.add_post("/api/v1/processes/{name}/executions", a(self.execute))
        r.add_get("/api/v1/executions", a(self.executions))
        r.add_get("/api/v1/executions/{id}", a(self.execution))
        r.add_get("/api/v1/executions/{id}/response", a(self.response))
        r.add_get("/api/v1/executions/{id}/logs", a(self.logs))
        r.add_get("/api/v1/executions/{id}/documents", a(self.documents))
        r.add_post("/api/v1/executions/{id}/retry", a(self.retry))
        r.add_get("/metrics", a(self.metrics))

    def _authed(self, fn: Callable[[web.Request, str | None], Awaitable[web.StreamResponse]]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            if self.rt.state == "starting":  # the store is not open yet
                return self.rt.unavailable()
            try:
                user = self.rt.server_auth.authenticate(request.headers)
            except AuthError as exc:
                h = {"WWW-Authenticate": exc.challenge} if exc.challenge else None
                resp: web.StreamResponse = error_response(exc.status, exc.code, exc.message, headers=h)
            else:
                resp = await fn(request, user)
            self.rt.count("api", resp.status)
            return resp

        return handler

    # ---------------------------------------------------------------------------------- processes
    def _process_info(self, request: web.Request, pdef: ProcessDef) -> dict[str, Any]:
        lst = self.rt.listeners.processes.get(pdef.name)
        sch = schedule_of(pdef)
        nxt = self.rt.scheduler.next_run(pdef.name) if sch else None
        key = listener_key(pdef)
        return {
            "name": pdef.name,
            "description": pdef.description,
            "version": pdef.version,
            "startKind": pdef.start.kind,
            "mode": pdef.mode,
            "allowSimultaneous": pdef.allow_simultaneous,
            "listenerUrl": base_url(request, self.rt.config.server.base_url) + lst.path if lst else None,
            "listenerMethods": sorted(lst.methods) if lst else None,
            "soapOperation": key[1] if key and key[0] == "soap" else None,
            "schedule": sch,
            "nextRun": nxt.isoformat().replace("+00:00", "Z") if nxt else None,
            "inFlight": self.rt.active.get(pdef.name, 0),
            "file": pdef.file,
        }

    async def processes(self, request: web.Request, user: str | None) -> web.StreamResponse:
        procs = sorted(self.rt.engine.deployment.processes.values(), key=lambda p: p.name)
        return json_response({"items": [self._process_info(request, p) for p in procs]})

    async def process(self, request: web.Request, user: str | None) -> web.StreamResponse:
        name = request.match_info["name"]
        pdef = self.rt.engine.deployment.processes.get(name)
        if pdef is None:
            return error_response(404, "NOT_FOUND", f"process '{name}' is not deployed")
        return json_response(self._process_info(request, pdef))

    async def execute(self, request: web.Request, user: str | None) -> web.StreamResponse:
        """Run a process now: body = input document, `?prop.NAME=value` process properties."""
        rt = self.rt
        if not rt.ready:
            return rt.unavailable()
        name = request.match_info["name"]
        pdef = rt.engine.deployment.processes.get(name)
        if pdef is None:
            return error_response(404, "NOT_FOUND", f"process '{name}' is not deployed")
        try:
            wait_header = request.headers.get("X-Max-Wait")
            wait = parse_max_wait(wait_header, rt.config.limits.max_wait_ms, 0)
            callback = rt.callback_url(request.headers.get("X-Callback-Url"))
        except ValueError as exc:
            return error_response(400, "BAD_REQUEST", str(exc))
        body = await rt.read_body(request)
        if isinstance(body, web.Response):
            return body
        props = {k[5:]: v for k, v in request.query.items() if k.startswith("prop.") and len(k) > 5}
        if user is not None:
            props["inuser"] = user
        listen = pdef.listen
        docs: list[Document] | None = None
        if body:
            try:
                docs = read_documents(listen.get("input", "data") if listen else "data", body, {})
            except InputError as exc:
                return error_response(400, "INVALID_INPUT", f"process '{name}': {exc}")
        busy = rt.admit(pdef, None)
        if busy is not None:
            return busy.to_web()
        debug = request.headers.get("X-Atom-Debug", "").lower() == "true"
        try:
            ex = rt.engine.new_execution(pdef, docs, properties=props, execution_type="exec_manual", debug=debug)
        except BaseException:
            rt.release(pdef)
            raise
        job = rt.start_job(ex, output=listen.get("output", "data") if listen else "data", callback=callback,
                           admitted=True)
        return await rt.answer(request, job, wait, force_async=wait_header is None)

    # ---------------------------------------------------------------------------------- executions
    async def executions(self, request: web.Request, user: str | None) -> web.StreamResponse:
        q = request.query
        try:
            status = q.get("status") or None
            if status is not None and status not in STATUSES:
                raise ValueError(f"unknown status '{status}'; expected one of {', '.join(STATUSES)}")
            limit = int(q.get("limit", "50"))
            if not 1 <= limit <= MAX_LIMIT:
                raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
            query = ListQuery(process=q.get("process") or None, status=status,
                              since=parse_time(q["since"]) if q.get("since") else None,
                              until=parse_time(q["until"]) if q.get("until") else None,
                              limit=limit, cursor=q.get("cursor") or None)
            page = await self.rt.store.list_records(query)
        except CursorError as exc:
            return error_response(400, "BAD_REQUEST", str(exc))
        except ValueError as exc:
            return error_response(400, "BAD_REQUEST", f"invalid query: {exc}")
        return json_response({"items": page.items, "nextCursor": page.next_cursor})

    async def _record(self, eid: str) -> dict[str, Any] | None:
        job = self.rt.jobs.get(eid)
        if job is not None:
            return job.ex.record()
        running = self.rt.engine.running.get(eid)
        if running is not None:
            return running.record()
        return await self.rt.store.get_record(eid)

    async def execution(self, request: web.Request, user: str | None) -> web.StreamResponse:
        eid = request.match_info["id"]
        rec = await self._record(eid)
        if rec is None:
            return _unknown(eid)
        return json_response(rec)

    async def response(self, request: web.Request, user: str | None) -> web.StreamResponse:
        """The stored HTTP response; 202 + Retry-After while in process; 404 unknown or not kept."""
        eid = request.match_info["id"]
        job = self.rt.jobs.get(eid)
        if job is None or job.response is None:
            stored = None if job is not None else await self.rt.store.get_response(eid)
            if stored is not None:
                return stored.to_web()
            rec = await self._record(eid)
            if rec is None:
                return _unknown(eid)
            if rec["status"] != "INPROCESS":
                return error_response(404, "NO_RESPONSE", f"execution '{eid}' ended {rec['status']} and no "
                                      f"response was kept (process mode {rec.get('mode')}, answered "
                                      "synchronously or not started by a listener)", eid)
            return self.rt.accepted(request, eid)
        return job.response.to_web()

    async def logs(self, request: web.Request, user: str | None) -> web.StreamResponse:
        eid = request.match_info["id"]
        job = self.rt.jobs.get(eid)
        if job is not None:
            return json_response({"executionId": eid, "items": [e.to_dict() for e in job.ex.logs]})
        items = await self.rt.store.get_logs(eid)
        if items is None:
            if await self._record(eid) is None:
                return _unknown(eid)
            items = []
        return json_response({"executionId": eid, "items": items})

    async def documents(self, request: web.Request, user: str | None) -> web.StreamResponse:
        eid = request.match_info["id"]
        docs = await self.rt.store.get_documents(eid)
        if not docs and await self._record(eid) is None:
            return _unknown(eid)
        return json_response({"executionId": eid, "items": [d.to_dict() for d in docs]})

    async def retry(self, request: web.Request, user: str | None) -> web.StreamResponse:
        """A new execution (retry_manual) of the same process with the stored inbound documents and
        process properties; only general-mode executions keep them."""
        rt = self.rt
        if not rt.ready:
            return rt.unavailable()
        eid = request.match_info["id"]
        try:
            wait_header = request.headers.get("X-Max-Wait")
            wait = parse_max_wait(wait_header, rt.config.limits.max_wait_ms, 0)
            callback = rt.callback_url(request.headers.get("X-Callback-Url"))
        except ValueError as exc:
            return error_response(400, "BAD_REQUEST", str(exc))
        rec = await self._record(eid)
        if rec is None:
            return _unknown(eid)
        if rec["status"] == "INPROCESS":
            return error_response(409, "IN_PROCESS", f"execution '{eid}' is still in process", eid)
        inputs = await rt.store.get_inputs(eid)
        if inputs is None:
            return error_response(409, "NOT_RETRYABLE", f"execution '{eid}' kept no inbound documents (process "
                                  f"mode {rec.get('mode')}; only general mode keeps them)", eid)
        name = rec["processName"]
        pdef = rt.engine.deployment.processes.get(name)
        if pdef is None:
            return error_response(409, "NOT_RETRYABLE", f"process '{name}' of execution '{eid}' is no longer "
                                  "deployed", eid)
        props, docs = inputs
        if user is not None:
            props["inuser"] = user
        busy = rt.admit(pdef, None)
        if busy is not None:
            return busy.to_web()
        ex = rt.engine.new_execution(pdef, docs if docs or pdef.start.kind == "connector" else None,
                                     properties=props, execution_type="retry_manual")
        ex.log("info", f"retry of execution {eid}")
        listen = pdef.listen
        job = rt.start_job(ex, output=listen.get("output", "data") if listen else "data", callback=callback,
                           admitted=True)
        return await rt.answer(request, job, wait, force_async=wait_header is None)

    async def metrics(self, request: web.Request, user: str | None) -> web.StreamResponse:
        return web.Response(body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _unknown(eid: str) -> web.Response:
    return error_response(404, "NOT_FOUND", f"no execution '{eid}'")
