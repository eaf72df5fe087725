"""Flow shapes: decision, branch, route, try_catch, flow_control, stop, return, exception."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from ..document import Document
from ..errors import KINDS, DocumentError, ExecutionAbort, StopExecution
from ..expressions import Template, truthy
from ..spec import Bool, Duration, Enum, Field, Int, ListOf, MapOf, Object, Spec, Str, Value
from ..yamlio import Where
from . import END, Outputs, Shape, shape

if TYPE_CHECKING:
    from ..engine import Execution
    from ..loader import CompileContext

_REF = Str()
OPS = ("=", "!=", "<", ">", "<=", ">=", "matches", "contains")


@shape
class Decision(Shape):
    kind = "decision"
    summary = ("Per document: the `then` path if the condition holds, else the `else` path "
               "(Boomi's true/false paths). True-path documents run first.")
    example = '{id: d, decision: {when: "{{ doc.json.total > 1000 }}", then: big, else: small}}'
    branching = True
    value_type = Object(Spec([
        Field("when", Value(), description="condition template; true unless it is false, 0, '', 'false', 'no'"),
        Field("left", Value(), description="left operand of a comparison"),
        Field("op", Enum(*OPS), default="=", description="comparison operator"),
        Field("right", Value(), description="right operand of a comparison"),
        Field("then", _REF, required=True, description="shape id (or `end`) for documents that pass"),
        Field("else", _REF, required=True, description="shape id (or `end`) for the others"),
    ]))

    def __init__(self, id: str, cfg: Any, where: Where, cc: CompileContext) -> None:
        super().__init__(id, cfg, where, cc)
        self.when: Template | None = cfg.get("when")
        self.left, self.op, self.right = cfg.get("left"), cfg.get("op", "="), cfg.get("right")
        node = where.node if where.node is not None else {}
        if ("when" in node) == ("left" in node):
            cc.error(where.location, "decision needs either 'when' or 'left'/'op'/'right'")
        if "left" in node and "right" not in node:
            cc.error(where.location, "decision comparison needs 'right'")
        self.then, self.else_ = cfg.get("then"), cfg.get("else")
        self._regex: re.Pattern[str] | None = None
        if self.op == "matches" and self.right is not None and self.right.is_constant:
            try:
                self._regex = re.compile(str(self.right.evaluate({})))
            except re.error as exc:
                cc.error(where.value("right"), f"invalid regular expression: {exc}")

    def targets(self) -> list[tuple[str, str]]:
        return [("then", self.then), ("else", self.else_)]

    def test(self, doc: Document, ex: Execution) -> bool:
        scope = ex.scope(doc)
        if self.when is not None:
            return truthy(self.when.evaluate(scope))
        return compare(self.left.evaluate(scope), self.op, self.right.evaluate(scope), self._regex)

    async def run(self, docs: list[Document], ex: Execution) -> Outputs:
        yes: list[Document] = []
        no: list[Document] = []
        for doc in docs:
            try:
                (yes if self.test(doc, ex) else no).append(doc)
            except DocumentError as exc:
                yes.append(doc.fail(f"decision '{self.id}': {exc}", exc.kind))
        return [(self.then, yes), (self.else_, no)]


def compare(left: Any, op: str, right: Any, regex: re.Pattern[str] | None = None) -> bool:
    """Compare like Boomi's decision: numerically when both sides are numbers, else as strings."""
    if op == "matches":
        return bool((regex or re.compile(str(right))).search("" if left is None else str(left)))
    if op == "contains":
        if isinstance(left, (list, dict)):
            return right in left
        return str(right) in ("" if left is None else str(left))
    ln, rn = _num(left), _num(right)
    if ln is not None and rn is not None:
        a: Any = ln
        b: Any = rn
    else:
        a = "" if left is None else (str(left).lower() if isinstance(left, bool) else str(left))
        b = "" if right is None else (str(right).lower() if isinstance(right, bool) else str(right))
    if op == "=":
        return bool(a == b)
    if op == "!=":
        return bool(a != b)
    if op == "<":
        return bool(a < b)
    if op == ">":
        return bool(a > b)
    if op == "<=":
        return bool(a <= b)
    return bool(a >= b)


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


@shape
class Branch(Shape):
    kind = "branch"
    summary = ("Sends every document down each path in order: path 1 runs to completion, then path 2. "
               "Each path gets its own copy of the documents; a document that fails on one path does "
               "not go on to later paths.")
    example = "{id: b, branch: {paths: [audit, store]}}"
    branching = True
    value_type = Object(Spec([
        Field("paths", ListOf(_REF, min_items=1), required=True, description="shape ids, run in order"),
    ]))

    def __init__(self, id: str, cfg: Any, where: Where, cc: CompileContext) -> None:
        super().__init__(id, cfg, where, cc)
        self.paths: list[str] = cfg.get("paths", [])

    def targets(self) -> list[tuple[str, str]]:
        return [(f"paths[{i}]", p) for i, p in enumerate(self.paths)]

    async def run(self, docs: list[Document], ex: Execution) -> Outputs:
        sid = ex.new_scope()
        alive = list(enumerate(docs))
        for path in self.paths:
            if not alive:
                break
            copies = []
            for i, d in alive:
                c = d.copy()
                c.trace = (*d.trace, (sid, i))
                copies.append(c)
            await ex.run_path(path, copies)
            alive = [(i, d) for i, d in alive if (sid, i) not in ex.failed]
        return []


@shape
class Route(Shape):
    kind = "route"
    summary = "Per document, the path whose key equals the `by` value; `default` when none matches."
    example = '{id: r, route: {by: "{{ doc.json.kind }}", routes: {A: pa, B: pb}, default: pz}}'
    branching = True
    value_type = Object(Spec([
        Field("by", Value(), required=True, description="template giving the routing value"),
        Field("routes", MapOf(_REF), required=True, description="value -> shape id"),
        Field("default", _REF, default=END, description="shape id for unmatched documents"),
    ]))

    def __init__(self, id: str, cfg: Any, where: Where, cc: CompileContext) -> None:
        super().__init__(id, cfg, where, cc)
        self.by = cfg.get("by")
        self.routes: dict[str, str] = cfg.get("routes", {})
        self.default: str = cfg.get("default", END)

    def targets(self) -> list[tuple[str, str]]:
        return [*((f"routes.{k}", v) for k, v in self.routes.items()), ("default", self.default)]

    async def run(self, docs: list[Document], ex: Execution) -> Outputs:
        buckets: dict[str, list[Document]] = {}
        for doc in docs:
            try:
                val = self.by.evaluate(ex.scope(doc))
            except DocumentError as exc:
                doc.fail(f"route '{self.id}': {exc}", exc.kind)
                buckets.setdefault(self.default, []).append(doc)
                continue
            key = ("true" if val else "false") if isinstance(val, bool) else str(val)
            buckets.setdefault(self.routes.get(key, self.default), []).append(doc)
        order = [*self.routes.values(), self.default]
        seen: set[str] = set()
        out: Outputs = []
        for target in order:
            if target in buckets and target not in seen:
                seen.add(target)
                out.append((target, buckets[target]))
        return out


@shape
class TryCatch(Shape):
    kind = "try_catch"
    summary = ("Runs the `try` path; documents that fail anywhere on it are retried (optionally) and then "
               "sent to the `catch` path with document properties `try_catch_message` (the error), "
               "`try_catch_kind` (`timeout`, `unreachable`, `unavailable`, `status`, `rejected`, `auth`, "
               "`invalid` or `error`) and, when the failure came with an HTTP answer, `try_catch_status`.")
    example = "{id: t, try_catch: {try: risky, catch: handle, retries: 2, backoff: 500ms}}"
    branching = True
    value_type = Object(Spec([
        Field("try", _REF, required=True, description="first shape of the guarded path"),
        Field("catch", _REF, default=END, description="first shape of the error path"),
        Field("retries", Int(minimum=0, maximum=10), default=0,
              description="re-runs of the try path for failed documents"),
        Field("backoff", Duration(), default=0.1, description="delay before the first retry; doubles"),
        Field("max_backoff", Duration(), default=30.0, description="upper bound of one delay"),
    ]))

    def __init__(self, id: str, cfg: Any, where: Where, cc: CompileContext) -> None:
        super().__init__(id, cfg, where, cc)
        self.try_, self.catch = cfg.get("try"), cfg.get("catch", END)
        self.retries, self.backoff = cfg.get("retries", 0), cfg.get("backoff", 0.1)
        self.max_backoff = cfg.get("max_backoff", 30.0)

    def targets(self) -> list[tuple[str, str]]:
        return [("try", self.try_), ("catch", self.catch)]

    async def run(self, docs: list[Document], ex: Execution) -> Outputs:
        pending = list(enumerate(docs))
        attempt = 0
        while True:
            sid = ex.new_scope()
            ex.catching.add(sid)
            copies = []
            for i, d in pending:
                c = d.copy()
                c.trace = (*d.trace, (sid, i))
                copies.append(c)
            try:
                await ex.run_path(self.try_, copies)
            finally:
                ex.catching.discard(sid)
            failed = [(i, d, ex.failed[(sid, i)]) for i, d in pending if (sid, i) in ex.failed]
            if not failed:
                return []
            if attempt >= self.retries:
                break
            attempt += 1
            delay = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
            ex.log("warning", f"{len(failed)} document(s) failed; retry {attempt} of {self.retries} "
                              f"in {delay:.3f}s", self.id)
            await asyncio.sleep(delay)
            pending = [(i, d) for i, d, _ in failed]
        caught = []
        for _i, d, (message, kind, status) in failed:
            c = d.copy()
            props = c.props
            props["try_catch_message"] = message
            props["try_catch_kind"] = kind
            if status is not None:
                props["try_catch_status"] = str(status)
            else:
                props.pop("try_catch_status", None)
            caught.append(c)
        ex.log("warning", f"{len(caught)} document(s) sent to the catch path", self.id)
        return [(self.catch, caught)]


@shape
class FlowControl(Shape):
    kind = "flow_control"
    summary = ("Runs the rest of the path for documents one at a time (`batch: 1`) or in batches of N, "
               "sequentially or `parallel` batches at once.")
    example = "{id: f, flow_control: {batch: 1, parallel: 4}}"
    value_type = Object(Spec([
        Field("batch", Int(minimum=1), default=1, description="documents per run of the rest of the path"),
        Field("parallel", Int(minimum=1, maximum=256), default=1, description="batches run at once"),
    ]))

    def __init__(self, id: str, cfg: Any, where: Where, cc: CompileContext) -> None:
        super().__init__(id, cfg, where, cc)
        self.batch, self.parallel = cfg.get("batch", 1), cfg.get("parallel", 1)

    async def run(self, docs: list[Document], ex: Execution) -> Outputs:
        if not self.next:
            return []
        chunks = [docs[i:i + self.batch] for i in range(0, len(docs), self.batch)]
        if self.parallel == 1:
            for chunk in chunks:
                await ex.run_path(self.next, chunk)
            return []
        sem = asyncio.Semaphore(self.parallel)
        nxt = self.next

        async def one(chunk: list[Document]) -> None:
            async with sem:
                await ex.run_path(nxt, chunk)

        await asyncio.gather(*(one(c) for c in chunks))
        return []


@shape
class Stop(Shape):
    kind = "stop"
    summary = ("Ends this path. With `continue: false` the whole execution ends at once "
               "(status COMPLETE, documents already returned are kept).")
    example = "{id: e, stop: {}}"
    terminal = True
    value_type = Object(Spec([
        Field("continue", Bool(), default=True, description="let other paths go on"),
    ]))

    async def run(self, docs: list[Document], ex: Execution) -> Outputs:
        if not self.cfg.get("continue", True):
            raise StopExecution(f"stopped by shape '{self.id}'")
        return []


@shape
class Return(Shape):
    kind = "return"
    summary = ("Collects documents as the process result: the HTTP response of a listener, or the "
               "documents a parent's process_call gets back.")
    example = "{id: z, return: {}}"
    terminal = True
    value_type = Object(Spec([
        Field("label", Str(), description="optional name of this return path"),
    ]))

    async def run(self, docs: list[Document], ex: Execution) -> Outputs:
        ex.returned.extend(docs)
        return []


@shape
class Exception_(Shape):
    kind = "exception"
    summary = ("Fails each document with a templated message (`scope: document`, caught by an "
               "enclosing try_catch), or the whole execution (`scope: execution`, never caught).")
    example = '{id: x, exception: {message: "bad order {{ doc.json.id }}", scope: document}}'
    terminal = True
    value_type = Object(Spec([
        Field("message", Value(), required=True, description="template of the error message"),
        Field("scope", Enum("document", "execution"), default="document", description="what fails"),
        Field("kind", Enum(*KINDS), default="error",
              description="kind of the document error (`try_catch_kind` on a catch path)"),
    ]))

    async def run(self, docs: list[Document], ex: Execution) -> Outputs:
        tmpl = self.cfg["message"]
        kind = self.cfg.get("kind", "error")
        out = []
        for doc in docs:
            try:
                msg = tmpl.render(ex.scope(doc))
            except DocumentError as exc:
                msg = f"(message failed: {exc})"
            if self.cfg.get("scope") == "execution":
                raise ExecutionAbort(msg)
            out.append(doc.fail(msg, kind))
        return [(None, out)]
