"""Mocks of process tests: the documents of a mocked shape stay inside the enclosing try_catch."""

from __future__ import annotations

import textwrap
from pathlib import Path

from atom.testing import run_directory

PROCESS = """
    process: guarded
    shapes:
      - {id: guard, try_catch: {try: lookup, catch: caught}}
      - {id: lookup, connector: {connection: peer, action: send}}
      - {id: check, exception: {message: "bad answer {{ doc.json.n }}"}}
      - {id: caught, message: {template: "caught: {{ doc.props.try_catch_message }}"}}
      - {id: reply, return: {}}
"""

TEST = """
    test: guarded
    cases:
      - name: a failure after a mocked shape takes the catch path
        input: {n: 0}
        document_properties: {source: test}
        mocks:
          lookup: {documents: [{n: 1}]}
        expect:
          status: COMPLETE
          documents: ["caught: bad answer 1"]
          document_properties: [{source: test}]
"""


def test_documents_of_a_mock_keep_the_try_scope_of_their_input(tmp_path: Path) -> None:
    (tmp_path / "guarded.yaml").write_text(textwrap.dedent(PROCESS))
    (tmp_path / "peer.yaml").write_text("connection: peer\ntype: test\n")
    (tmp_path / "guarded_test.yaml").write_text(textwrap.dedent(TEST))
    [result] = run_directory(tmp_path)
    assert result.ok, "\n".join(result.failures)
    assert result.status == "COMPLETE"
