"""CSV cells a spreadsheet will not run: a text cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return is a formula to Excel and LibreOffice (OWASP "CSV injection"); it is written with a leading ``'``, which they
show as text. Only text is touched: numbers (a negative score) stay numbers. Every CSV the product writes (the record's
``history``, the web app's results, ``infer``'s summary) goes through ``safe_row``."""
from __future__ import annotations

from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """``value`` with a leading ``'`` when it is text a spreadsheet would read as a formula; anything else as is."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def safe_row(row: dict[str, Any]) -> dict[str, Any]:
    """``safe_cell`` on every value of a CSV row."""
    return {k: safe_cell(v) for k, v in row.items()}
