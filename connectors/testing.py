"""The `test` connector: an in-memory peer for samples and process tests.

`get` returns the documents listed in the connection or the operation; `send` records each document
in memory (`TestConnector.sent[connection name]`) and passes it on, or answers with a reply template,
or fails documents on request — so processes can be exercised without any external system.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

from atom.connector import Connector, OperationContext
from atom.document import Document
from atom.errors import KINDS
from atom.expressions import truthy
from atom.spec import Any_, Duration, Enum, Field, Int, ListOf, Spec, Str, Template, Value


def _to_doc(item: Any) -> Document:
    if isinstance(item, str):
        return Document(item)
    return Document.from_json(item)


class TestConnector(Connector):
    __test__ = False  # not a pytest class
    type = "test"
    summary = "In-memory connector for samples and tests: returns fixed documents, records what is sent."
    connection_spec = Spec([
        Field("documents", ListOf(Any_()), default=list,
              description="documents a get returns (strings as text, anything else as JSON)"),
        Field("delay", Duration(), default=0.0, description="pause before answering (simulates a slow peer)"),
    ])
    operations: ClassVar[dict[str, Spec]] = {
        "get": Spec([
            Field("documents", ListOf(Any_()), description="documents to return (overrides the connection's)"),
        ]),
        "send": Spec([
            Field("reply", Template(), description="template of the answer document (default: the input)"),
            Field("fail_when", Value(), description="condition under which a document fails"),
            Field("fail_message", Str(), default="rejected by test connector", description="failure message"),
            Field("fail_kind", Enum(*KINDS), default="rejected",
                  description="kind of the failure (`try_catch_kind` on a catch path)"),
            Field("fail_status", Int(minimum=100, maximum=599),
                  description="HTTP status of the failure (`try_catch_status`), as an http peer would give"),
        ]),
    }
    #: connection name -> documents sent (for tests)
    sent: ClassVar[dict[str, list[Document]]] = {}

    async def get(self, op: Mapping[str, Any], docs: list[Document], ctx: OperationContext) -> list[Document]:
        if self.config.get("delay"):
            await asyncio.sleep(self.config["delay"])
        items = op.get("documents")
        if items is None:
            items = self.config.get("documents", [])
        return [_to_doc(i) for i in items]

    async def send(self, op: Mapping[str, Any], docs: list[Document], ctx: OperationContext) -> list[Document]:
        if self.config.get("delay"):
            await asyncio.sleep(self.config["delay"])
        out = []
        sink = TestConnector.sent.setdefault(self.name, [])
        reply, fail_when = op.get("reply"), op.get("fail_when")
        fail_kind, fail_status = op.get("fail_kind", "rejected"), op.get("fail_status")
        for doc in docs:
            scope = ctx.scope(doc)
            if fail_when is not None and truthy(fail_when.evaluate(scope)):
                out.append(doc.fail(f"connection '{self.name}': {op.get('fail_message')}", fail_kind, fail_status))
                continue
            sink.append(doc)
            out.append(doc.derive(reply.render(scope)) if reply is not None else doc)
        return out


__all__ = ["TestConnector"]
