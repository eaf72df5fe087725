from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from atom.document import Document
from atom.engine import Engine, Execution
from atom.loader import load_directory
from atom.model import Deployment


@pytest.fixture
def deploy(tmp_path: Path) -> Callable[..., Deployment]:
    """Write component files (name -> YAML text) into a temp dir and load it."""

    def make(**files: str) -> Deployment:
        for name, text in files.items():
            (tmp_path / f"{name}.yaml").write_text(textwrap.dedent(text))
        return load_directory(tmp_path)

    return make


def run(dep: Deployment, process: str, *inputs: Any, **kw: Any) -> Execution:
    """Run one execution synchronously; inputs are bytes/str documents or Documents."""
    docs = None
    if inputs:
        docs = [i if isinstance(i, Document) else Document(i) for i in inputs]

    async def go() -> Execution:
        eng = Engine(dep)
        try:
            return await eng.execute(process, docs, **kw)
        finally:
            await eng.stop()

    return asyncio.run(go())
