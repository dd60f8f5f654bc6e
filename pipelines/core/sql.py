"""SQL literals for the predicates that Delta Lake and Lance parse (ids and request
values are never pasted into SQL unquoted)."""

from __future__ import annotations

from collections.abc import Iterable


def sql_string(value: str) -> str:
    """``value`` as an SQL string literal (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def sql_in(column: str, values: Iterable[str]) -> str:
    """``column IN ('a', 'b')`` with each value quoted as an SQL string literal."""
    return f"{column} IN ({', '.join(sql_string(v) for v in sorted(values))})"


def sql_equals(column: str, value: str | int | bool) -> str:
    """``column = literal``: a string quoted, an integer or a boolean as itself."""
    if isinstance(value, bool):
        return f"{column} = {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"{column} = {value!r}"
    return f"{column} = {sql_string(value)}"
