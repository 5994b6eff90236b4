"""``graphwsss settings``: every setting of ``graphwsss run`` with its type, default and meaning.

The meaning of a setting is the comment after its field in :mod:`graphwsss.settings` (with the
comment lines indented under it that continue it), read from that module's source, so that each
setting keeps one home: its field, its default, its range and its comment. Defaults are those
of a supervision (:func:`graphwsss.settings.supervision_defaults`) and, optionally, a YAML file.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import tokenize
from typing import Any

from graphwsss import settings as settings_module
from graphwsss.config import load_config
from graphwsss.settings import RunSettings, supervision_defaults

_BOUND_WORDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def field_comments() -> dict[str, dict[str, str]]:
    """``{class name: {field name: meaning}}`` from the comments of :mod:`graphwsss.settings`:
    the comment on a field's line(s), then the comment-only lines right after it that are
    indented deeper than the class body (its continuation); joined into one line."""
    source = inspect.getsource(settings_module)
    comments: dict[int, tuple[int, str]] = {}        # line -> (column, text)
    code_lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = (token.start[1], token.string.lstrip("#").strip())
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                                tokenize.ENDMARKER):
            code_lines.update(range(token.start[0], token.end[0] + 1))
    meanings: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = meanings.setdefault(node.name, {})
        for statement in node.body:
            if not (isinstance(statement, ast.AnnAssign)
                    and isinstance(statement.target, ast.Name)):
                continue
            parts = [comments[line][1] for line in
                     range(statement.lineno, statement.end_lineno + 1) if line in comments]
            line = statement.end_lineno + 1
            while line in comments and line not in code_lines \
                    and comments[line][0] > statement.col_offset:
                parts.append(comments[line][1])
                line += 1
            fields[statement.target.id] = " ".join(part for part in parts if part)
    return meanings


def _describe(cls: type, values: Any, prefix: str, comments: dict[str, dict[str, str]],
              rows: list[dict[str, Any]]) -> None:
    for spec in dataclasses.fields(cls):
        value = getattr(values, spec.name)
        key = prefix + spec.name
        if dataclasses.is_dataclass(value):
            _describe(type(value), value, f"{key}.", comments, rows)
            continue
        bounds = spec.metadata.get("range") or {}
        allowed = " and ".join(f"{_BOUND_WORDS[name]} {bound:g}" for name, bound in bounds.items())
        note = spec.metadata.get("note") or ""
        rows.append({"key": key, "type": str(spec.type).replace("'", '"'),
                     "default": json.loads(json.dumps(value)),
                     "allowed": "; ".join(part for part in (allowed, note) if part),
                     "meaning": comments.get(cls.__name__, {}).get(spec.name, "")})


def describe_settings(supervision: str = "box", config: str | None = None) -> list[dict[str, Any]]:
    """One row per setting key (dotted, nested sections expanded): ``key``, ``type``,
    ``default`` (with the supervision's defaults and ``config`` applied), ``allowed`` (its range,
    or ``""``) and ``meaning`` (its comment in :mod:`graphwsss.settings`)."""
    values = load_config(RunSettings, config, defaults=supervision_defaults(supervision))
    rows: list[dict[str, Any]] = []
    _describe(RunSettings, values, "", field_comments(), rows)
    return rows


def format_settings(rows: list[dict[str, Any]]) -> str:
    """``key = default  (type[; allowed])`` then the meaning, indented, for every row."""
    lines = []
    for row in rows:
        allowed = f"; {row['allowed']}" if row["allowed"] else ""
        lines.append(f"{row['key']} = {json.dumps(row['default'])}  ({row['type']}{allowed})")
        lines.append(f"    {row['meaning'] or '-'}")
    return "\n".join(lines)
