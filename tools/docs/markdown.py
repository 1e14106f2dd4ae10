"""Markdown text the reference pages share: table cells that survive any description (pipes, angle
brackets and emphasis characters escaped outside code spans; Python-Markdown's tables keep a pipe inside
a code span) and compact values."""

from __future__ import annotations

import json
import re
from typing import Any

_SPECIAL = re.compile(r"([\\|*_\[\]])")


def cell(text: str) -> str:
    """`text` on one line, safe in a table cell: markdown characters escaped outside `code` spans."""
    parts = " ".join(str(text).split()).split("`")
    if len(parts) % 2 == 0:  # an unbalanced backtick: treat the whole text as prose
        parts = [" ".join(str(text).split()).replace("`", "'")]
    escaped = [
        part if index % 2 else _SPECIAL.sub(r"\\\1", part).replace("<", "&lt;").replace(">", "&gt;")
        for index, part in enumerate(parts)
    ]
    return "`".join(escaped)


def value(item: Any) -> str:
    """A default or an example value as compact JSON in a code span ('' for none)."""
    if item is None:
        return ""
    text = json.dumps(item, separators=(", ", ": "), ensure_ascii=False)
    return f"`{text}`"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines
