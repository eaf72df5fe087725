"""Error kinds: failures carry a kind (and an HTTP status when there is one) from where they happen to
the catch path (`try_catch_kind`, `try_catch_status`) and the execution log."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from atom.connector import Connector, ConnectorRegistry, OperationContext
from atom.document import Document
from atom.errors import (
    KINDS,
    ConnectorError,
    DocumentError,
    network_kind,
    status_kind,
)
from atom.loader import load_directory
from atom.model import Deployment
from atom.resilience import CircuitBreaker, CircuitOpenError, RetryPolicy, call_with_retry
from atom.spec import Enum, Field, Int, Spec
from connectors.testing import TestConnector

from .conftest import run

MEM = """
connection: mem
type: test
"""


def caught(ex: Any) -> list[dict[str, str]]:
    """The try_catch properties of the returned documents."""
    return [{k: v for k, v in d.props.items() if k.startswith("try_catch_")} for d in ex.returned]


# ------------------------------------------------------------------------------------------ the errors


def test_the_vocabulary_is_small_and_closed() -> None:
    assert KINDS == ("timeout", "unreachable", "unavailable", "status", "rejected", "auth", "invalid", "error")
    with pytest.raises(ValueError, match="unknown error kind 'down'"):
        ConnectorError("x", kind="down")
    with pytest.raises(ValueError, match="unknown error kind"):
        Document().fail("x", "down")


def test_defaults_and_a_wrapper_keeps_the_kind_of_its_cause() -> None:
    assert DocumentError("not JSON").kind == "invalid"
    assert ConnectorError("boom").kind == "error"
    assert ConnectorError("late", kind="timeout", status=None).kind == "timeout"
    assert CircuitOpenError("erp", 3.0).kind == "unavailable"
    try:
        raise ConnectorError("refused", kind="unreachable")
    except ConnectorError:
        wrapped = ConnectorError("connection 'erp': refused")  # made while the cause is handled
        failed = Document().fail("connection 'erp': refused")
        named = ConnectorError("other", kind="auth")
    assert wrapped.kind == "unreachable" and failed.error_kind == "unreachable" and named.kind == "auth"
    assert ConnectorError("later").kind == "error"  # nothing handled any more


def test_http_statuses_and_network_exceptions_have_kinds() -> None:
    assert [status_kind(s) for s in (401, 403)] == ["auth", "auth"]
    assert {status_kind(s) for s in (400, 409, 412, 413, 415, 422)} == {"rejected"}
    assert {status_kind(s) for s in (302, 404, 405, 429, 500, 502, 503)} == {"status"}
    assert network_kind(TimeoutError()) == "timeout"
    assert network_kind(ConnectionRefusedError()) == "unreachable"
    assert network_kind(EOFError()) == "unreachable"
    assert network_kind(ValueError()) == "error"


def test_a_failed_document_keeps_kind_and_status_a_good_one_has_none() -> None:
    doc = Document(b"{}")
    assert (doc.error, doc.error_kind, doc.error_status) == (None, None, None)
    doc.fail("answered 503", "status", 503)
    assert (doc.error, doc.error_kind, doc.error_status) == ("answered 503", "status", 503)
    assert Document().fail("plain").error_kind == "error"
    assert doc.copy().error_kind is None and doc.derive(b"x").error is None


# ------------------------------------------------------------------------------------------ resilience


async def _no_sleep(_: float) -> None:
    return None


async def test_retries_exhausted_keep_the_kind_and_status_of_the_last_attempt() -> None:
    async def answer_503() -> None:
        raise ConnectorError("GET / answered 503", retryable=True, status=503, kind="status")

    with pytest.raises(ConnectorError) as info:
        await call_with_retry(answer_503, policy=RetryPolicy(attempts=3, jitter=0), sleep=_no_sleep)
    assert (info.value.kind, info.value.status) == ("status", 503)
    assert str(info.value) == "GET / answered 503 (after 3 attempts)"

    async def refused() -> None:
        raise ConnectionRefusedError("refused")

    async def slow() -> None:
        raise TimeoutError

    for fn, kind in ((refused, "unreachable"), (slow, "timeout")):
        with pytest.raises(ConnectorError) as info:
            await call_with_retry(fn, policy=RetryPolicy(attempts=2, jitter=0), sleep=_no_sleep)
        assert info.value.kind == kind


async def test_an_open_breaker_and_one_that_opens_during_the_retries_give_unavailable() -> None:
    breaker = CircuitBreaker("kinds-erp", failure_threshold=2, reset_timeout=60)

    async def answer_500() -> None:
        raise ConnectorError("answered 500", retryable=True, status=500, kind="status")

    with pytest.raises(ConnectorError) as info:
        await call_with_retry(answer_500, policy=RetryPolicy(attempts=5, jitter=0), breaker=breaker,
                              connection="kinds-erp", sleep=_no_sleep)
    assert "then the circuit breaker is open" in str(info.value)
    assert (info.value.kind, info.value.status) == ("unavailable", 500)
    with pytest.raises(CircuitOpenError) as opened:
        await call_with_retry(answer_500, policy=RetryPolicy(attempts=5), breaker=breaker,
                              connection="kinds-erp", sleep=_no_sleep)
    assert (opened.value.kind, opened.value.status) == ("unavailable", None)


# ------------------------------------------------------------------------------------------ the engine


def test_try_catch_sets_kind_and_status_of_what_failed(deploy: Callable[..., Deployment]) -> None:
    dep = deploy(mem=MEM, p="""
        process: p
        shapes:
          - {id: t, try_catch: {try: k, catch: h}}
          - id: k
            connector:
              connection: mem
              operation:
                fail_when: "{{ doc.json.n > 0 }}"
                fail_message: "no answer within 1s"
                fail_kind: "timeout"
                fail_status: 504
          - {id: h, return: {}}
        """, q="""
        process: q
        shapes:
          - {id: t, try_catch: {try: k, catch: h}}
          - {id: k, connector: {connection: mem, operation: {fail_when: "{{ true }}"}}}
          - {id: h, return: {}}
        """)
    ex = run(dep, "p", '{"n": 1}')
    assert caught(ex) == [{"try_catch_message": "connection 'mem': no answer within 1s",
                           "try_catch_kind": "timeout", "try_catch_status": "504"}]
    # the test connector's default is a refusal without status; a stale status is not carried on
    stale = Document(b"{}", {"try_catch_status": "500"})
    assert caught(run(dep, "q", stale)) == [{"try_catch_message": "connection 'mem': rejected by test connector",
                                             "try_catch_kind": "rejected"}]


def test_shape_failures_have_their_kind(deploy: Callable[..., Deployment]) -> None:
    dep = deploy(p="""
        process: p
        shapes:
          - {id: t, try_catch: {try: read, catch: h}}
          - {id: read, set_properties: {document: {n: "{{ doc.json.n }}"}}}
          - {id: check, decision: {when: "{{ doc.json.n > 1 }}", then: refuse, else: fail}}
          - {id: refuse, exception: {message: "too many: {{ doc.json.n }}", kind: rejected}}
          - {id: fail, exception: {message: "one is not enough"}}
          - {id: h, return: {}}
        """)
    ex = run(dep, "p", "not json", '{"n": 2}', '{"n": 1}')
    kinds = sorted((c["try_catch_kind"], c["try_catch_message"].split(":")[0]) for c in caught(ex))
    assert kinds == [("error", "one is not enough"), ("invalid", "set_properties 'read'"),
                     ("rejected", "too many")]


def test_a_map_that_cannot_transform_a_document_fails_it_as_invalid(deploy: Callable[..., Deployment]) -> None:
    dep = deploy(p="""
        process: p
        shapes:
          - {id: t, try_catch: {try: m, catch: h}}
          - {id: m, map: {fields: {id: {source: $.id, required: true}}}}
          - {id: h, return: {}}
        """)
    [got] = caught(run(dep, "p", '{"name": "no id"}'))
    assert got["try_catch_kind"] == "invalid" and "required value is missing" in got["try_catch_message"]


def test_the_execution_log_and_an_uncaught_failure_name_the_kind(deploy: Callable[..., Deployment]) -> None:
    dep = deploy(mem=MEM, p="""
        process: p
        shapes:
          - {id: n, notify: {message: "sending"}}
          - id: k
            connector:
              connection: mem
              operation: {fail_when: "{{ true }}", fail_kind: status, fail_status: 502}
        """)
    ex = run(dep, "p", "x")
    assert ex.status == "ERROR"
    [entry] = [e for e in ex.logs if e.level == "error"]
    assert (entry.kind, entry.status) == ("status", 502)
    record = entry.to_dict()
    assert record["errorKind"] == "status" and record["errorStatus"] == 502
    assert (ex.error_documents[0].error_kind, ex.error_documents[0].error_status) == ("status", 502)
    assert "errorKind" not in next(e for e in ex.logs if e.level == "info").to_dict()


def test_process_call_passes_the_kind_of_the_childs_failure_on(deploy: Callable[..., Deployment]) -> None:
    dep = deploy(mem=MEM, child="""
        process: child
        shapes:
          - id: k
            connector:
              connection: mem
              operation: {fail_when: "{{ true }}", fail_kind: unreachable, fail_message: "network error"}
        """, aborting="""
        process: aborting
        shapes:
          - {id: x, exception: {message: "stop", scope: execution}}
        """, p="""
        process: p
        shapes:
          - {id: t, try_catch: {try: call, catch: h}}
          - {id: call, process_call: {process: child}}
          - {id: h, return: {}}
        """, q="""
        process: q
        shapes:
          - {id: t, try_catch: {try: call, catch: h}}
          - {id: call, process_call: {process: aborting}}
          - {id: h, return: {}}
        """)
    [got] = caught(run(dep, "p", "x"))
    assert got["try_catch_kind"] == "unreachable" and "network error" in got["try_catch_message"]
    assert caught(run(dep, "q", "x"))[0]["try_catch_kind"] == "error"


class _Raising(Connector):
    """Raises for the whole batch, with the kind the operation names."""

    type = "raising"
    operations: ClassVar[dict[str, Spec]] = {"send": Spec([
        Field("kind", Enum(*KINDS), default="error", description="kind"),
        Field("status", Int(), description="status"),
    ])}

    async def send(self, op: Mapping[str, Any], docs: list[Document], ctx: OperationContext) -> list[Document]:
        raise ConnectorError("peer said no", kind=op.get("kind", "error"), status=op.get("status"))


def test_a_connector_that_raises_fails_the_batch_with_its_kind(tmp_path: Path) -> None:
    (tmp_path / "peer.yaml").write_text("connection: peer\ntype: raising\n")
    (tmp_path / "p.yaml").write_text(textwrap.dedent("""
        process: p
        shapes:
          - {id: t, try_catch: {try: k, catch: h}}
          - {id: k, connector: {connection: peer, operation: {kind: auth, status: 401}}}
          - {id: h, return: {}}
        """))
    registry = ConnectorRegistry({"raising": _Raising, "test": TestConnector})
    dep = load_directory(tmp_path, registry=registry)
    got = caught(run(dep, "p", "a", "b"))
    # the kind only: a status reaches documents when the connector fails them itself
    assert got == [{"try_catch_message": "connector 'k' (peer): peer said no", "try_catch_kind": "auth"}] * 2


def test_a_caught_document_costs_nothing_extra_on_success(deploy: Callable[..., Deployment]) -> None:
    dep = deploy(mem=MEM, p="""
        process: p
        shapes:
          - {id: t, try_catch: {try: k, catch: h}}
          - {id: k, connector: {connection: mem}, next: r}
          - {id: h, return: {}}
          - {id: r, return: {}}
        """)
    ex = run(dep, "p", "ok")
    assert [d.props for d in ex.returned] == [{}] and not ex.failed
    assert all(d.error_kind is None for d in ex.returned)
