"""The one markdown table helper of spikecut (reports, studies, benchmarks)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["markdown_table"]


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[object]], numeric_from: int = 1
) -> str:
    """A markdown table; columns from ``numeric_from`` on are right-aligned. Cells are
    written with ``str``; a ``|`` in a cell is escaped and a newline becomes a space."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = [_row(header), _row(align)]
    lines += [_row(r) for r in rows]
    return "\n".join(lines)


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _cell(text: object) -> str:
    return str(text).replace("|", r"\|").replace("\n", " ")
