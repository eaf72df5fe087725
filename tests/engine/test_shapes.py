"""Semantics of every shape, run through the real loader and engine."""

from __future__ import annotations

import json
import uuid

from connectors.testing import TestConnector

from .conftest import run

MEM = """
connection: mem
type: test
documents: ['{"id": 1}', '{"id": 2}']
"""


def texts(ex) -> list[str]:  # type: ignore[no-untyped-def]
    return [d.text for d in ex.returned]


def test_decision_per_document_true_path_first(deploy) -> None:  # type: ignore[no-untyped-def]
    dep = deploy(p="""
        process: p
        shapes:
          - {id: d, decision: {left: "{{ doc.json.n }}", op: ">", right: 10, then: big, else: small}}
          - {id: big, message: {template: "big {{ doc.json.n }}"}, next: r}
          - {id: small, message: {template: "small {{ doc.json.n }}"}}
          - {id: r, return: {}}
        """)
    ex = run(dep, "p", '{"n": 5}', '{"n": 50}', '{"n": 11}')
    assert ex.status == "COMPLETE"
    assert texts(ex) == ["big 50", "big 11", "small 5"]


def test_decision_operators(deploy) -> None:  # type: ignore[no-untyped-def]
    from atom.shapes.flow import compare

    assert compare("10", ">", 9) and not compare("10", "<", "9")
    assert compare("abc", "contains", "b") and compare("ORD-12", "matches", r"^ORD-\d+$")
    assert compare("x", "!=", "y") and compare(2, "<=", 2.0) and compare("b", ">=", "a")
    assert compare(True, "=", "true")


def test_branch_runs_paths_in_order_and_failed_docs_skip_later_paths(deploy) -> None:  # type: ignore[no-untyped-def]
    dep = deploy(mem=MEM, p="""
        process: p
        shapes:
          - {id: b, branch: {paths: [one, two]}}
          - {id: one, connector: {connection: mem, operation: {fail_when: "{{ doc.json.id == 2 }}"}}, next: n1}
          - {id: n1, message: {template: "one {{ doc.json.id }}"}, next: r}
          - {id: two, message: {template: "two {{ doc.json.id }}"}}
          - {id: r, return: {}}
        """)
    ex = run(dep, "p", '{"id": 1}', '{"id": 2}')
    assert texts(ex) == ["one 1", "two 1"]
    assert ex.status == "ERROR"
    assert "rejected by test connector" in ex.message


def test_branch_paths_get_copies(deploy) -> None:  # type: ignore[no-untyped-def]
    dep = deploy(p="""
        process: p
        shapes:
          - {id: b, branch: {paths: [one, two]}}
          - {id: one, set_properties: {document: {seen: one}}, next: end}
          - {id: two, message: {template: "{{ doc.props.get('seen', 'none') }}"}}
          - {id: r, return: {}}
        """)
    assert texts(run(dep, "p", "x")) == ["none"]


def test_route(deploy) -> None:  # type: ignore[no-untyped-def]
    dep = deploy(p="""
        process: p
        shapes:
          - {id: rt, route: {by: "{{ doc.json.kind }}", routes: {A: a, B: b}, default: z}}
          - {id: a, message: {template: "A"}, next: r}
          - {id: b, message: {template: "B"}, next: r}
          - {id: z, message: {template: "Z"}}
          - {id: r, return: {}}
        """)
    ex = run(dep, "p", '{"kind": "B"}', '{"kind": "A"}', '{"kind": "Q"}')
    assert texts(ex) == ["A", "B", "Z"]


def test_set_properties_and_message_batch(deploy) -> None:  # type: ignore[no-untyped-def]
    dep = deploy(p="""
        process: p
        properties: {region: eu}
        shapes:
          - {id: s, set_properties: {process: {last: "{{ doc.json.id }}"}, document: {tier: "t{{ doc.json.id }}"}}}
          - {id: m, message: {batch: true, content_type: text/plain,
               template: "{% for d in docs %}{{ d.props.tier }}/{{ process.region }};{% endfor %}"}}
          - {id: r, return: {}}
        """)
    ex = run(dep, "p", '{"id": 1}', '{"id": 2}')
    assert texts(ex) == ["t1/eu;t2/eu;"]
    assert ex.properties["last"] == "2"
    assert ex.returned[0].props["content_type"] == "text/plain"


def test_notify_logs_and_warns(deploy) -> None:  # type: ignore[no-untyped-def]
    dep = deploy(p="""
        process: p
        shapes:
          - {id: n, notify: {level: warning, message: "late {{ doc.json.id }}"}}
          - {id: r, return: {}}
        """)
    ex = run(dep, "p", '{"id": 7}')
    assert ex.status == "COMPLETE_WARN"
    assert ex.message == "n: late 7"  # the record says what the warning was
    assert [(e.level, e.shape, e.message) for e in ex.logs] == [("warning", "n", "late 7")]
    assert len(ex.returned) == 1


def test_split_and_combine(deploy) -> None:  # type: ignore[no-untyped-def]
    dep = deploy(p="""
        process: p
        shapes:
          - {id: sp, split: {jsonpath: "$.items[*]"}}
          - {id: d, decision: {when: "{{ doc.json.qty > 1 }}", then: c, else: end}}
          - {id: c, combine: {json_array: true}}
          - {id: r, return: {}}
        """, x="""
        process: x
        shapes:
          - {id: sp, split: {xpath: "/Orders/Order"}}
          - {id: c, combine: {xml_root: Batch}}
          - {id: r, return: {}}
        """, l="""
        process: l
        shapes:
          - {id: sp, split: {csv: {header: true}}}
          - {id: r, return: {}}
        """)
    ex = run(dep, "p", '{"items": [{"qty": 1}, {"qty": 2}, {"qty": 3}]}')
    assert [d.json for d in ex.returned] == [[{"qty": 2}, {"qty": 3}]]
    ex = run(dep, "x", "<Orders><Order id='1'/><Order id='2'/></Orders>")
    assert texts(ex) == ['<Batch><Order id="1"/><Order id="2"/></Batch>']
    ex = run(dep, "l", "sku,qty\nA,1\nB,2\n")
    assert [d.json for d in ex.returned] == [{"sku": "A", "qty": "1"}, {"sku": "B", "qty": "2"}]


def test_connector_get_start_and_send(deploy) -> None:  # type: ignore[no-untyped-def]
    TestConnector.sent.pop("mem", None)
    dep = deploy(mem=MEM, p="""
        process: p
        start: {connector: {connection: mem}}
        shapes:
          - {id: k, connector: {connection: mem, action: send, operation: {reply: 'ack {{ doc.json.id }}'}}}
          - {id: r, return: {}}
        """)
    ex = run(dep, "p")
    assert texts(ex) == ["ack 1", "ack 2"]
    assert [d.json for d in TestConnector.sent["mem"]] == [{"id": 1}, {"id": 2}]


def test_try_catch_routes_failed_documents_with_message_and_retries(deploy) -> None:  # type: ignore[no-untyped-def]
    dep = deploy(mem=MEM, p="""
        process: p
        shapes:
          - {id: t, try_catch: {try: k, catch: h, retries: 2, backoff: 10ms}}
          - {id: k, connector: {connection: mem, operation: {fail_when: "{{ doc.json.id == 2 }}"}}, next: ok}
          - {id: ok, message: {template: "ok {{ doc.json.id }}"}, next: r}
          - {id: h, message: {template: "caught {{ doc.json.id }}: {{ doc.props.try_catch_message }}"}}
          - {id: r, return: {}}
        """)
    ex = run(dep, "p", '{"id": 1}', '{"id": 2}')
    assert ex.status == "COMPLETE"
    assert texts(ex) == ["ok 1", "caught 2: connection 'mem': rejected by test connector"]
    retries = [e.message for e in ex.logs if "retry" in e.message]
    assert len(retries) == 2


def test_exception_document_is_caught_execution_is_not(deploy) -> None:  # type: ignore[no-untyped-def]
    dep = deploy(p="""
        process: p
        shapes:
          - {id: t, try_catch: {try: x, catch: h}}
          - {id: x, exception: {message: "bad order {{ doc.json.id }}"}}
          - {id: h, message: {template: "{{ doc.props.try_catch_message }}"}}
          - {id: r, return: {}}
        """, q="""
        process: q
        shapes:
          - {id: t, try_catch: {try: x, catch: h}}
          - {id: x, exception: {message: "stop all {{ doc.json.id }}", scope: execution}}
          - {id: h, return: {}}
        """)
    assert texts(run(dep, "p", '{"id": 9}')) == ["bad order 9"]
    ex = run(dep, "q", '{"id": 9}')
    assert ex.status == "ERROR" and ex.message == "stop all 9" and not ex.returned


def test_uncaught_document_error_fails_execution_other_documents_go_on(deploy) -> None:  # type: ignore[no-untyped-def]
    dep = deploy(p="""
        process: p
        shapes:
          - {id: m, message: {template: "{{ doc.json.id }}"}}
          - {id: r, return: {}}
        """)
    ex = run(dep, "p", '{"id": 1}', "not json", '{"id": 3}')
    assert texts(ex) == ["1", "3"]
    assert ex.status == "ERROR"
    assert ex.message.startswith("message 'm': in '{{ doc.json.id }}': document is not valid JSON")
    assert ex.record()["errorDocumentCount"] == 1


def test_stop_continue_false_ends_execution(deploy) -> None:  # type: ignore[no-untyped-def]
    dep = deploy(p="""
        process: p
        shapes:
          - {id: b, branch: {paths: [one, two]}}
          - {id: one, return: {}}
          - {id: two, stop: {continue: false}}
        """, q="""
        process: q
        shapes:
          - {id: b, branch: {paths: [s, two]}}
          - {id: s, stop: {}}
          - {id: two, return: {}}
        """)
    ex = run(dep, "p", "x")
    assert ex.status == "COMPLETE" and texts(ex) == ["x"]
    assert texts(run(dep, "q", "y")) == ["y"]


def test_process_call_passthrough_and_per_document(deploy) -> None:  # type: ignore[no-untyped-def]
    dep = deploy(child="""
        process: child
        start: {passthrough: {}}
        shapes:
          - {id: s, set_properties: {process: {child_saw: "{{ doc.json.n }}"}}}
          - {id: m, message: {template: "child {{ doc.json.n }} {{ process.parent_prop }}"}}
          - {id: r, return: {}}
        """, p="""
        process: p
        properties: {parent_prop: hi}
        shapes:
          - {id: c, process_call: {process: child}}
          - {id: r, return: {}}
        """, q="""
        process: q
        properties: {parent_prop: hi}
        shapes:
          - {id: c, process_call: {process: child, passthrough: false}}
          - {id: r, return: {}}
        """)
    ex = run(dep, "p", '{"n": 1}', '{"n": 2}')
    assert texts(ex) == ["child 1 hi", "child 2 hi"]
    assert ex.properties["child_saw"] == "2"
    assert texts(run(dep, "q", '{"n": 1}', '{"n": 2}')) == ["child 1 hi", "child 2 hi"]


def test_cache_add_and_get(deploy) -> None:  # type: ignore[no-untyped-def]
    dep = deploy(p="""
        process: p
        shapes:
          - {id: b, branch: {paths: [add, get]}}
          - {id: add, cache: {name: c, action: add, key: "{{ doc.json.k }}"}, next: end}
          - {id: get, message: {template: "{{ doc.json.k }}"}, next: look}
          - {id: look, cache: {name: c, action: get, key: "{{ doc.text }}"}}
          - {id: r, return: {}}
        """)
    ex = run(dep, "p", '{"k": "a", "v": 1}', '{"k": "b", "v": 2}')
    assert [d.json for d in ex.returned] == [{"k": "a", "v": 1}, {"k": "b", "v": 2}]


def test_flow_control_one_at_a_time(deploy) -> None:  # type: ignore[no-untyped-def]
    dep = deploy(p="""
        process: p
        shapes:
          - {id: f, flow_control: {batch: 1}}
          - {id: c, combine: {json_array: true}}
          - {id: r, return: {}}
        """, q="""
        process: q
        shapes:
          - {id: f, flow_control: {batch: 2, parallel: 2}}
          - {id: c, combine: {json_array: true}}
          - {id: r, return: {}}
        """)
    ex = run(dep, "p", "1", "2", "3")
    assert [d.json for d in ex.returned] == [[1], [2], [3]]
    ex = run(dep, "q", "1", "2", "3")
    assert sorted(json.dumps(d.json) for d in ex.returned) == ["[1, 2]", "[3]"]


def test_listener_process_without_return_returns_nothing(deploy) -> None:  # type: ignore[no-untyped-def]
    dep = deploy(p="""
        process: p
        start: {listen: {object: Thing, input: json}}
        shapes:
          - {id: n, notify: {message: hi}}
        """)
    ex = run(dep, "p", "{}")
    assert ex.status == "COMPLETE" and ex.returned == []


def test_record_fields(deploy) -> None:  # type: ignore[no-untyped-def]
    import re

    dep = deploy(p="process: p\nshapes:\n  - {id: r, return: {}}\n")
    rec = run(dep, "p", "abc").record()
    assert re.fullmatch(r"execution-[0-9a-f-]{36}-\d{4}\.\d{2}\.\d{2}", rec["executionId"])
    for key in ("processName", "processVersion", "executionType", "status", "executionTime",
                "executionDuration", "inboundDocumentCount", "inboundErrorDocumentCount",
                "outboundDocumentCount", "inboundDocumentSize", "outboundDocumentSize", "message",
                "parentExecutionId", "topLevelExecutionId", "atomName", "nodeId"):
        assert key in rec
    assert rec["inboundDocumentSize"] == 3 and rec["outboundDocumentCount"] == 1


def test_execution_ids_are_not_shared_with_a_forked_worker() -> None:
    import os

    from atom.engine import new_execution_id

    new_execution_id()  # the parent holds buffered random values when the worker is forked
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next ids and leave at once
        os.write(w, ",".join(new_execution_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        child = set(f.read().decode().split(","))
    os.waitpid(pid, 0)
    parent = {new_execution_id() for _ in range(200)}
    assert len(child) == 5 and not child & parent


def test_execution_bookkeeping(deploy) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt
    import re

    from atom import metrics
    from atom.engine import new_execution_id

    ids = {new_execution_id() for _ in range(200)}
    assert len(ids) == 200
    today = dt.datetime.now(dt.UTC)
    for eid in ids:
        m = re.fullmatch(r"execution-([0-9a-f-]{36})-(\d{4}\.\d{2}\.\d{2})", eid)
        assert m is not None, eid
        u = uuid.UUID(m.group(1))
        assert u.version == 7 and u.variant == uuid.RFC_4122 and str(u) == m.group(1)
        assert m.group(2) in (f"{today:%Y.%m.%d}", f"{today - dt.timedelta(seconds=5):%Y.%m.%d}")
    assert new_execution_id(dt.datetime(2026, 1, 2, 23, 0)).endswith("-2026.01.02")
    assert new_execution_id(86400 * 365.0).endswith("-1971.01.01")
    # version 7: the first 48 bits are the time in milliseconds, so ids sort by start time
    first = new_execution_id(1_800_000_000.0)
    assert int(first[10:18] + first[19:23], 16) == 1_800_000_000_000
    later = [new_execution_id(1_800_000_000.0 + i / 100) for i in range(1, 50)]
    assert sorted(later) == later and first < later[0]

    dep = deploy(p="""
        process: bookkept
        shapes:
          - {id: m, message: {template: "{{ execution.id }} {{ execution.process }} {{ execution.start }}"}}
          - {id: r, return: {}}
        """)
    def sample(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, {"process": "bookkept", **labels}) or 0.0

    done = sample("atom_executions_total", status="COMPLETE")
    observed = sample("atom_execution_duration_seconds_count")
    ex = run(dep, "bookkept")
    eid, name, start = ex.returned[0].text.split(" ")
    assert (eid, name) == (ex.id, "bookkept")
    assert dt.datetime.fromisoformat(start) == ex.start_time and ex.start_time.tzinfo == dt.UTC
    assert ex.id.endswith(f"-{ex.start_time:%Y.%m.%d}")
    assert ex.record()["executionTime"] == ex.start_time.isoformat().replace("+00:00", "Z")
    assert ex.done.is_set()
    assert sample("atom_executions_total", status="COMPLETE") == done + 1
    assert sample("atom_execution_duration_seconds_count") == observed + 1
    assert sample("atom_executions_in_flight") == 0


def test_loop_metrics_match_prometheus_client_exposition() -> None:
    """The plain-number metrics of the hot path expose what prometheus_client's own would."""
    import pytest
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from atom import metrics
    from atom.metrics import LoopCounter, LoopHistogram

    ref = CollectorRegistry()
    bounds = (0.001, 0.01, 1)
    want_h = Histogram("t_hist_seconds", "h", ["p"], registry=ref, buckets=bounds).labels("x")
    want_c = Counter("t_count_total", "c", ["p"], registry=ref).labels("x")
    got_h = LoopHistogram("t_hist_seconds", "h", ["p"], buckets=bounds).labels("x")
    got_c = LoopCounter("t_count_total", "c", ["p"]).labels("x")
    for v in (0.001, 0.0005, 0.5, 0.01, 7, 0.0100001):
        want_h.observe(v)
        got_h.observe(v)
        want_c.inc(2)
        got_c.inc(2)

    def lines(text: bytes) -> list[str]:
        return sorted(ln for ln in text.decode().splitlines() if ln.startswith("t_") and "_created" not in ln)

    mine = lines(generate_latest(metrics.REGISTRY))
    assert mine == lines(generate_latest(ref)) and len(mine) == 7
    with pytest.raises(ValueError):
        got_c.inc(-1)
