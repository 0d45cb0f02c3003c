"""Plain-text tables that fit the terminal: what the CLI prints for people (`-o table`).

Called by `report.py` (plan's decision and observation tables) and `cli/` (validate, simulate).
Columns are separated by two spaces, like `kubectl get`; when the rows are wider than the terminal,
the widest columns wrap onto continuation lines until the table fits: between words first, then
breaking words down to 6 characters. Width: `$COLUMNS` when set, else the terminal's, else
unlimited (a pipe or a file has no width to fit).
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

GAP = "  "
MIN_COLUMN = 6


@dataclass
class Table:
    """A titled table: header, rows (a row of `None` draws a separator line), an optional caption."""

    columns: Sequence[str]
    title: str = ""
    caption: str = ""
    rows: list[Sequence[str] | None] = field(default_factory=list)

    def add_row(self, *cells: str) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"a row of {len(cells)} cells in a table of {len(self.columns)} columns")
        self.rows.append(cells)

    def add_section(self) -> None:
        self.rows.append(None)


def terminal_width() -> int | None:
    """Columns to fit: `$COLUMNS`, else the terminal's when stdout is one, else None (no limit)."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def _fit(natural: list[int], floors: list[int], width: int | None) -> list[int]:
    """Column widths: the natural ones, the widest narrowed one character at a time until the row fits."""
    widths = list(natural)
    if width is None:
        return widths
    budget = width - len(GAP) * (len(widths) - 1)
    while sum(widths) > budget:
        candidates = [i for i, w in enumerate(widths) if w > floors[i]]
        if not candidates:
            break  # cannot fit: print at the floors and let the terminal wrap
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1
    return widths


def _longest_word(cells: Sequence[str]) -> int:
    return max((len(word) for cell in cells for word in str(cell).split()), default=0)


def render(table: Table, width: int | None = None) -> str:
    """The table as text, each line at most `width` characters when the columns' floors allow it.

    Columns first narrow down to their longest word (wrapping between words); only when that is still
    too wide do they break words, down to MIN_COLUMN characters.
    """
    header = list(table.columns)
    body = [r for r in table.rows if r is not None]
    by_column = [list(column) for column in zip(header, *body, strict=True)]
    natural = [max(len(str(c)) for c in column) for column in by_column]
    widths = _fit(natural, [min(n, _longest_word(c)) for n, c in zip(natural, by_column, strict=True)], width)
    widths = _fit(widths, [min(n, MIN_COLUMN) for n in natural], width)
    lines: list[str] = []
    if table.title:
        lines += textwrap.wrap(table.title, width) if width else [table.title]
    for row in (header, None, *table.rows):
        if row is None:
            lines.append(GAP.join("-" * w for w in widths))
            continue
        wrapped = [textwrap.wrap(str(c), w) or [""] for c, w in zip(row, widths, strict=True)]
        for k in range(max(len(cell) for cell in wrapped)):
            parts = [(cell[k] if k < len(cell) else "").ljust(w) for cell, w in zip(wrapped, widths, strict=True)]
            lines.append(GAP.join(parts).rstrip())
    if table.caption:
        lines += textwrap.wrap(table.caption, width) if width else [table.caption]
    return "\n".join(lines) + "\n"
