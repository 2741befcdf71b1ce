"""Load the SQL files in ``sql/`` and substitute their named parameters safely.

A file is a sequence of statements separated by ``;``; ``--`` comments are
dropped. Parameters are written ``{{name}}`` and every one must be supplied:
values are rendered as SQL literals by type, never pasted as text, so an event
type such as ``x') OR 1=1 --`` is refused instead of being executed.

* int (not bool)      -> decimal literal
* float               -> ``repr`` (finite only)
* str                 -> single-quoted literal; only ``[A-Za-z0-9_ :.+-]``
* list/tuple of str   -> comma-separated quoted literals (non-empty)
"""

from __future__ import annotations

import math
import re
from importlib import resources

SQL_PACKAGE = "sql"   # the top-level sql/ folder, shipped as package data (pyproject.toml)

_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")
_SAFE_TEXT = re.compile(r"^[A-Za-z0-9_ :.+\-]*$")


class SqlParameterError(ValueError):
    pass


def literal(name: str, value) -> str:
    if isinstance(value, bool):
        raise SqlParameterError(f"parameter {name}: booleans are not accepted, got {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SqlParameterError(f"parameter {name}: must be finite, got {value!r}")
        return repr(value)
    if isinstance(value, str):
        if not _SAFE_TEXT.match(value):
            raise SqlParameterError(f"parameter {name}: unsafe characters in {value!r}")
        return f"'{value}'"
    if isinstance(value, (list, tuple)):
        if not value:
            raise SqlParameterError(f"parameter {name}: empty list")
        return ", ".join(literal(name, v) if isinstance(v, str) else _bad(name, v) for v in value)
    raise SqlParameterError(f"parameter {name}: unsupported type {type(value).__name__}")


def _bad(name, v):
    raise SqlParameterError(f"parameter {name}: list items must be strings, got {v!r}")


def strip_comments(text: str) -> str:
    return "\n".join(line.split("--", 1)[0].rstrip() for line in text.splitlines())


def render(text: str, params: dict) -> list[str]:
    """Return the statements of ``text`` with every ``{{name}}`` replaced."""
    body = strip_comments(text)
    needed = set(_PLACEHOLDER.findall(body))
    missing = needed - set(params)
    if missing:
        raise SqlParameterError(f"missing SQL parameters: {sorted(missing)}")
    rendered = _PLACEHOLDER.sub(lambda m: literal(m.group(1), params[m.group(1)]), body)
    return [s.strip() for s in rendered.split(";") if s.strip()]


def read(name: str) -> str:
    """The text of ``sql/<name>``, from the installed package, a wheel or a zip on ``sys.path``."""
    return resources.files(SQL_PACKAGE).joinpath(name).read_text(encoding="utf-8")


def load(name: str, params: dict) -> list[str]:
    """Render ``sql/<name>`` (e.g. ``cooccurrence_score.sql``)."""
    return render(read(name), params)
