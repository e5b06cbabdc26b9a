"""Tables for the terminal and for Markdown files (``compare`` and ``benchmarks/report.py``)."""

from __future__ import annotations

from collections.abc import Collection, Sequence


def render_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    markdown: bool = False,
    rule: bool = False,
    right_aligned: Collection[int] = (),
) -> str:
    """``rows`` under the header ``columns``, as aligned text or as a Markdown table.

    Text: cells left-aligned, columns two spaces apart, trailing spaces removed, with a
    dashed line under the header when ``rule``. Markdown: the columns whose index is in
    ``right_aligned`` are aligned right (``---:``).
    """
    cells = [[str(c) for c in columns], *[[str(x) for x in row] for row in rows]]
    if markdown:
        marks = ["---:" if i in right_aligned else "---" for i in range(len(columns))]
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join(marks) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells[1:]])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in cells]
    if rule:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
