"""Process tests: `*_test.yaml` files beside processes, run by `atom test` and collected by pytest.

```yaml
test: order-intake              # the process under test
cases:
  - name: small order is stored
    input: '{"id": 1, "total": 5}'        # or inputs: [...]; strings are text, other values JSON
    properties: {region: eu}               # process properties
    mocks:                                 # by shape id: the shape is not run
      store: {documents: ['{"ok": true}']} # ... it returns these documents
      # other: {error: "ERP is down"}      # ... or fails every document
      # erp: {error: "...", kind: status, status: 503}  # ... with an error kind and HTTP status
    expect:
      status: COMPLETE                     # COMPLETE | COMPLETE_WARN | ERROR
      documents: ['{"ok": true}']          # returned documents: text (trimmed) or JSON values
      count: 1
      properties: {seen: "1"}              # process properties (subset)
      document_properties: [{tier: small}] # per returned document (subset)
      message: "contains this"             # substring of the execution message
```
"""

from __future__ import annotations

import asyncio
import difflib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..document import Document
from ..errors import KINDS, LoadError, Location, Problem
from ..model import Deployment
from ..spec import Any_, CheckContext, Enum, Field, Int, ListOf, MapOf, Object, Spec, Str
from ..yamlio import Where, load_yaml

MOCK_SPEC = Spec([
    Field("documents", ListOf(Any_()), description="documents the mocked shape returns"),
    Field("error", Str(), description="fail every document with this message"),
    Field("kind", Enum(*KINDS), default="error",
          description="with `error`: the failure's kind (`try_catch_kind` on a catch path)"),
    Field("status", Int(minimum=100, maximum=599),
          description="with `error`: the HTTP status of the failure (`try_catch_status`)"),
], summary="A mock replacing one shape")

EXPECT_SPEC = Spec([
    Field("status", Enum("COMPLETE", "COMPLETE_WARN", "ERROR"), description="execution status"),
    Field("documents", ListOf(Any_()), description="returned documents, in order"),
    Field("count", Int(minimum=0), description="number of returned documents"),
    Field("properties", MapOf(Str()), description="process properties (subset)"),
    Field("document_properties", ListOf(MapOf(Str())), description="per returned document (subset)"),
    Field("message", Str(), description="substring of the execution message"),
])

CASE_SPEC = Spec([
    Field("name", Str(), required=True, description="test case name"),
    Field("input", Any_(), description="one input document"),
    Field("inputs", ListOf(Any_()), description="input documents"),
    Field("input_file", Str(), description="file (relative to the test file) holding the input"),
    Field("properties", MapOf(Str()), default=dict, description="process properties"),
    Field("document_properties", MapOf(Str()), default=dict, description="properties of each input document"),
    Field("mocks", MapOf(Object(MOCK_SPEC)), default=dict, description="shape id -> mock"),
    Field("expect", Object(EXPECT_SPEC), default=dict, description="expectations"),
])

TEST_SPEC = Spec([
    Field("test", Str(), required=True, description="name of the process under test"),
    Field("cases", ListOf(Object(CASE_SPEC), min_items=1), required=True, description="test cases"),
])


@dataclass
class CaseResult:
    file: str
    name: str
    ok: bool
    failures: list[str] = field(default_factory=list)
    status: str = ""


@dataclass
class TestCase:
    __test__ = False
    file: str
    process: str
    name: str
    spec: dict[str, Any]
    base: Path


def _doc(value: Any, props: Mapping[str, str] | None = None) -> Document:
    if isinstance(value, str):
        return Document(value, dict(props or {}))
    return Document.from_json(value, dict(props or {}))


def parse_test_file(path: Path) -> list[TestCase]:
    """Parse a `*_test.yaml` file; raises LoadError with located problems."""
    file = str(path)
    data, problems = load_yaml(path.read_text(encoding="utf-8"), file)
    if problems:
        raise LoadError(problems)
    if not isinstance(data, Mapping):
        raise LoadError([Problem(Location(file), "a test file must be a mapping with 'test' and 'cases'")])
    ctx = CheckContext()
    values = TEST_SPEC.check(data, Where(file, data), ctx)
    if ctx.problems:
        raise LoadError(ctx.problems)
    return [TestCase(file, values["test"], c["name"], c, path.parent) for c in values["cases"]]


def _mock(spec: Mapping[str, Any]) -> Callable[[list[Document]], list[Document]]:
    if "error" in spec:
        msg, kind, status = spec["error"], spec.get("kind", "error"), spec.get("status")
        return lambda docs: [d.fail(msg, kind, status) for d in docs]
    items = spec.get("documents", [])

    def run(docs: list[Document]) -> list[Document]:
        # The documents stand in for what the shape would derive from its input: they carry the
        # properties and the trace of the first input document, so an enclosing try_catch or
        # branch still sees a later failure of theirs.
        first = docs[0] if docs else None
        out = [_doc(i, first.props if first else None) for i in items]
        if first is not None:
            for d in out:
                d.trace = first.trace
        return out

    return run


def _same(expected: Any, got: Document) -> tuple[bool, str, str]:
    if isinstance(expected, str):
        exp_text = expected.strip()
        got_text = got.data.decode("utf-8", "replace").strip()
        if exp_text == got_text:
            return True, exp_text, got_text
        try:  # JSON text compares by value
            if json.loads(exp_text) == got.json:
                return True, exp_text, got_text
        except Exception:
            pass
        return False, exp_text, got_text
    try:
        value = got.json
    except Exception:
        value = got.data.decode("utf-8", "replace")
    exp_text = json.dumps(expected, indent=2, sort_keys=True)
    got_text = json.dumps(value, indent=2, sort_keys=True, default=str)
    return value == expected, exp_text, got_text


def _diff(expected: str, got: str) -> str:
    lines = difflib.unified_diff(expected.splitlines(), got.splitlines(), "expected", "got", lineterm="")
    return "\n".join(lines)


async def run_case(case: TestCase, deployment: Deployment) -> CaseResult:
    from ..engine import Engine

    spec = case.spec
    res = CaseResult(case.file, case.name, True)
    if case.process not in deployment.processes:
        return CaseResult(case.file, case.name, False, [f"no process named '{case.process}'"])
    props = spec.get("document_properties", {})
    if "inputs" in spec:
        docs: list[Document] | None = [_doc(v, props) for v in spec["inputs"]]
    elif "input" in spec:
        docs = [_doc(spec["input"], props)]
    elif "input_file" in spec:
        docs = [Document((case.base / spec["input_file"]).read_bytes(), dict(props))]
    else:
        docs = None
    mocks = {k: _mock(v) for k, v in spec.get("mocks", {}).items()}
    engine = Engine(deployment)
    try:
        ex = await engine.execute(case.process, docs, properties=spec.get("properties", {}),
                                  execution_type="test_manual", mocks=mocks)
    finally:
        await engine.stop()
    res.status = ex.status
    exp = spec.get("expect", {})
    fails = res.failures
    if "status" in exp and ex.status != exp["status"]:
        fails.append(f"status: expected {exp['status']}, got {ex.status}"
                     + (f" ({ex.message})" if ex.message else ""))
    elif "status" not in exp and ex.status == "ERROR":
        fails.append(f"execution failed: {ex.message}")
    if "count" in exp and len(ex.returned) != exp["count"]:
        fails.append(f"count: expected {exp['count']} returned document(s), got {len(ex.returned)}")
    if "documents" in exp:
        want = exp["documents"]
        if len(want) != len(ex.returned):
            fails.append(f"documents: expected {len(want)}, got {len(ex.returned)}")
        for i, (w, g) in enumerate(zip(want, ex.returned, strict=False)):
            ok, et, gt = _same(w, g)
            if not ok:
                fails.append(f"document {i + 1} differs:\n{_diff(et, gt)}")
    for k, v in exp.get("properties", {}).items():
        if ex.properties.get(k) != v:
            fails.append(f"process property '{k}': expected {v!r}, got {ex.properties.get(k)!r}")
    for i, want_props in enumerate(exp.get("document_properties", [])):
        got_props = ex.returned[i].props if i < len(ex.returned) else {}
        for k, v in want_props.items():
            if got_props.get(k) != v:
                fails.append(f"document {i + 1} property '{k}': expected {v!r}, got {got_props.get(k)!r}")
    if "message" in exp and exp["message"] not in ex.message:
        fails.append(f"message: expected to contain {exp['message']!r}, got {ex.message!r}")
    res.ok = not fails
    return res


def run_directory(directory: str | Path, pattern: str | None = None) -> list[CaseResult]:
    """Run every `*_test.yaml` under a directory (each against the components of its own directory)."""
    from ..loader import load_directory

    root = Path(directory)
    results: list[CaseResult] = []
    deployments: dict[Path, Deployment | LoadError] = {}
    for path in sorted(root.rglob("*_test.y*ml")):
        try:
            cases = parse_test_file(path)
        except LoadError as exc:
            results.append(CaseResult(str(path), "<file>", False, [str(p) for p in exc.problems]))
            continue
        if path.parent not in deployments:
            try:
                deployments[path.parent] = load_directory(path.parent)
            except LoadError as exc:
                deployments[path.parent] = exc
        dep = deployments[path.parent]
        for case in cases:
            if pattern and pattern not in case.name:
                continue
            if isinstance(dep, LoadError):
                results.append(CaseResult(case.file, case.name, False, [str(p) for p in dep.problems]))
                continue
            results.append(asyncio.run(run_case(case, dep)))
    return results


__all__ = ["CaseResult", "TestCase", "parse_test_file", "run_case", "run_directory"]
