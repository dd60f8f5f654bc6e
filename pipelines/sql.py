"""SQL literals for the predicates that Delta Lake and Lance parse (ids are never
pasted into SQL unquoted)."""

from __future__ import annotations

from collections.abc import Iterable


def sql_in(column: str, values: Iterable[str]) -> str:
    """``column IN ('a', 'b')`` with each value quoted as an SQL string literal."""
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in sorted(values))
    return f"{column} IN ({quoted})"
