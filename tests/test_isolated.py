"""The crash-isolated runner: a native crash or hang costs one call, not the process."""

from __future__ import annotations

import os
import signal
import time

import pytest

from pipelines.ingestion.isolated import ChildCrashedError, ChildTimeoutError, IsolatedRunner


def work(x: int) -> int:
    """Doubles x; crashes the process on -1, hangs on -2, raises on -3."""
    if x == -1:
        os.kill(os.getpid(), signal.SIGSEGV)
    if x == -2:
        time.sleep(60)
    if x == -3:
        raise ValueError("bad input -3")
    return 2 * x


def test_results_exceptions_and_crashes():
    runner = IsolatedRunner(work, timeout_s=3)
    try:
        assert runner(21) == 42
        with pytest.raises(ValueError, match="bad input -3"):
            runner(-3)
        assert runner(1) == 2  # an ordinary exception keeps the same child
        with pytest.raises(ChildCrashedError, match="SIGSEGV"):
            runner(-1)
        assert runner(2) == 4  # a fresh child after the crash
        with pytest.raises(ChildTimeoutError):
            runner(-2)
        assert runner(3) == 6
    finally:
        runner.close()
