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


def checked_where(where: str) -> str:
    """``where`` once it is known to be one self-contained SQL condition, so that joined
    to another with AND it cannot undo it: parentheses balanced outside string literals,
    no comment and no statement separator. ValueError says what is wrong.

    A request's ``where`` is joined to its ``filter`` as ``(filter) AND (where)``; a
    ``where`` of ``true) OR (true`` would otherwise turn that into a filter of nothing.
    """
    depth, quoted = 0, False
    for i, char in enumerate(where):
        if char == "'":
            quoted = not quoted  # a doubled quote inside a literal toggles twice
        elif quoted:
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"where: unbalanced ')' at character {i + 1}")
        elif where.startswith(("--", "/*"), i) or char == ";":
            raise ValueError("where: comments and ';' are not allowed")
    if quoted or depth:
        raise ValueError("where: an unclosed string literal or '('")
    return where
