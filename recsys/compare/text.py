"""Numbers and tables as the compare report's text (Markdown, console lines, plot labels)."""

from __future__ import annotations

import math
from typing import List, Optional, Sequence


def fmt(value: Optional[float], digits: int = 4) -> str:
    """A number for people: ``digits`` significant digits, NULL for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NULL"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]],
             digits: int = 6) -> List[str]:
    """A Markdown table; numbers are formatted with ``fmt`` (``digits`` significant digits)."""
    def cell(value: object) -> str:
        if value is None or isinstance(value, (int, float)):
            return fmt(value, digits)  # type: ignore[arg-type]
        return str(value).replace("|", "\\|")

    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return out
