"""One-line messages from exceptions: what a job prints after ``error:`` and what the
search service answers in ``detail``."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (a library's multi-line message cut to what a
    user reads first); the exception's type when the message is empty."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
