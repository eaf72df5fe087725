"""pytest collects `*_test.yaml` process tests: one test item per case."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from . import CaseResult, TestCase, parse_test_file, run_case

_DEPLOYMENTS: dict[Path, Any] = {}


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.name.endswith(("_test.yaml", "_test.yml")):
        return ProcessTestFile.from_parent(parent, path=file_path)
    return None


class ProcessTestFile(pytest.File):
    def collect(self) -> Any:
        for case in parse_test_file(self.path):
            yield ProcessTestItem.from_parent(self, name=case.name, case=case)


class ProcessTestError(Exception):
    pass


class ProcessTestItem(pytest.Item):
    def __init__(self, *, case: TestCase, **kw: Any) -> None:
        super().__init__(**kw)
        self.case = case

    def runtest(self) -> None:
        from ..loader import load_directory

        d = self.path.parent
        if d not in _DEPLOYMENTS:
            _DEPLOYMENTS[d] = load_directory(d)
        res: CaseResult = asyncio.run(run_case(self.case, _DEPLOYMENTS[d]))
        if not res.ok:
            raise ProcessTestError("\n".join(res.failures))

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        if isinstance(excinfo.value, ProcessTestError):
            return f"{self.case.file} :: {self.case.name}\n{excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"process test: {self.case.name}"
