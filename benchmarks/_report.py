"""Shared by the benchmark scripts: print a markdown table and optionally write it to a file."""

from __future__ import annotations

import pathlib


def emit(table: str, out: pathlib.Path | None) -> None:
    """Print ``table`` after a blank line; write it (with a final newline) to ``out`` if given."""
    print()
    print(table)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table + "\n")
