from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from somatize.executors.base import Completed, Executor, Outcome, Reporter, TrialRequest
from somatize.study import MetricRecord

# No test starts a warm command server (somatize.server) unless it means to: tests/test_server.py turns it
# on, in a directory of its own, and stops it. Subprocesses inherit this through the environment.
os.environ["SOMATIZE_SERVER"] = "off"


class FunctionOf(Executor):
    """An in-process executor for engine tests: metric = fn(params)."""

    def __init__(self, metric: str, fn: Callable[[dict[str, Any]], Any]):
        self.metric = metric
        self.fn = fn

    def run(self, request: TrialRequest, reporter: Reporter) -> Outcome:
        result = self.fn(dict(request.params))
        if isinstance(result, (Completed,)) or not isinstance(result, (int, float)):
            return result
        return Completed([MetricRecord(self.metric, float(result))])


@pytest.fixture
def function_of() -> type[FunctionOf]:
    return FunctionOf


@pytest.fixture(autouse=True)
def _fresh_user_modules():
    """Each test's objective modules are its own: CliRunner runs studies in this process, where an
    in-process function stays in sys.modules (as it should within one run), and many tests name
    their module `objective`."""
    import sys
    import tempfile

    # Only modules the tests wrote: the clone, or a virtual environment, may be in /tmp too.
    temp, installed = tempfile.gettempdir(), (str(Path(__file__).resolve().parents[1]), sys.prefix, sys.base_prefix)
    before, path = set(sys.modules), list(sys.path)
    yield
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        where = str(getattr(module, "__file__", "") or "")
        if where.startswith(temp) and not where.startswith(installed) and "site-packages" not in where:
            del sys.modules[name]
    sys.path[:] = path
