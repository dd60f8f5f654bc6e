"""Run a function in a child process, so that a native crash costs one call, not the job.

Video decoders are C libraries; a corrupt file can make them segfault, abort or
hang, which would kill or stall a Ray worker and, after retries, the whole
dataset. Each decode actor therefore keeps one long-lived child process
(spawned once, so a call costs a pickle round trip over a pipe, not a process
start), kills it when a call overruns its time limit, and starts a new one
after a crash or a kill.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import sys
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any


class ChildCrashedError(RuntimeError):
    """The child process died (signal or hard exit) while running one call."""


class ChildTimeoutError(TimeoutError):
    """One call ran longer than the time limit; the child was killed."""


def _serve(conn: Connection, fn: Callable[..., Any]) -> None:
    """Child loop: call ``fn`` on each argument tuple received, send back the outcome."""
    while True:
        try:
            args = conn.recv()
        except EOFError:
            return
        try:
            conn.send((True, fn(*args)))
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent
            try:
                conn.send((False, exc))
            except Exception:  # noqa: BLE001 - an exception that cannot be pickled
                conn.send((False, RuntimeError(f"{type(exc).__name__}: {exc}")))


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@contextlib.contextmanager
def _main_script_hidden() -> Iterator[None]:
    """Start children without the parent's main script.

    A spawned child runs the parent's ``__main__`` file again before its target
    (to find objects pickled from it); for a job script that imports torch and
    LanceDB that costs seconds per child, for nothing: the target and its
    arguments come from importable modules. A main module with no ``__file__``
    and no ``__spec__`` (as in an interactive session) is not run again.
    """
    main = sys.modules["__main__"]
    saved = {name: main.__dict__.get(name) for name in ("__file__", "__spec__")}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.update({k: v for k, v in saved.items() if v is not None})


class IsolatedRunner:
    """Call ``fn(*args)`` in a child process; its exceptions are re-raised here.

    A crash raises :class:`ChildCrashedError`, an overrun :class:`ChildTimeoutError`;
    either way the next call gets a fresh child.
    """

    def __init__(self, fn: Callable[..., Any], timeout_s: float | None = None) -> None:
        self.fn = fn
        self.timeout_s = timeout_s
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    def _start(self) -> None:
        # spawn, not fork: the parent is a multi-threaded Ray worker or driver.
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child_conn, self.fn), daemon=True)
        with _main_script_hidden():
            self._proc.start()
        child_conn.close()

    def __call__(self, *args: Any) -> Any:
        if self._proc is None or not self._proc.is_alive():
            self.close()
            self._start()
        self._conn.send(args)
        if not self._conn.poll(self.timeout_s):
            self.close()
            raise ChildTimeoutError(f"no result after {self.timeout_s:g} s; the decoder was killed")
        try:
            ok, value = self._conn.recv()
        except EOFError:
            self._proc.join(5)
            how = _describe_exit(self._proc.exitcode)
            self.close()
            raise ChildCrashedError(
                f"the decoding process crashed ({how}): a native decoder fault on this input"
            ) from None
        if ok:
            return value
        raise value

    def close(self) -> None:
        """Stop the child process; the next call starts a new one."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            if self._proc.pid is not None:  # it started
                if self._proc.is_alive():
                    self._proc.kill()
                self._proc.join(5)
            self._proc = None

    def __del__(self) -> None:
        self.close()
