"""The one output sink of the command line: data to stdout, messages and bars to stderr.

`print_table` renders rows (a list of dicts) as a rich table; `write_json` / `write_csv` write
exactly those rows for machines. Commands never call print() directly.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bioclip_cli.atomic_write import write_text

console = Console()  # stdout: results
err = Console(stderr=True)  # stderr: messages, warnings, hints, progress


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.4g}"
        return f"{value:.4f}"
    if value is None:
        return "-"
    return str(value)


def print_table(
    rows: Sequence[dict], title: str | None = None, columns: Sequence[str] | None = None, fold: bool = False
) -> None:
    """Print rows as a table; `columns` picks and orders the keys (default: keys of the first row).

    `fold=True` wraps long values (URLs, paths) onto more lines instead of cutting them with an ellipsis.
    """
    if not rows:
        err.print(f"[yellow]{title or 'table'}: nothing to show[/yellow]")
        return
    columns = list(columns or rows[0].keys())
    table = Table(title=title, show_lines=False, header_style="bold")
    for col in columns:
        numeric = all(isinstance(r.get(col), (int, float)) or r.get(col) is None for r in rows)
        table.add_column(str(col), justify="right" if numeric else "left", overflow="fold" if fold else "ellipsis")
    for row in rows:
        table.add_row(*(_fmt(row.get(col)) for col in columns))
    console.print(table)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented JSON (atomically)."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def csv_text(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """Rows as CSV with a header; `columns` picks and orders the keys (default: keys of the first row)."""
    import io

    columns = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return buf.getvalue()


def write_csv(path: str | Path, rows: Sequence[dict], columns: Sequence[str] | None = None) -> Path:
    """Write rows as CSV with a header (atomically)."""
    return write_text(path, csv_text(rows, columns))


def info(message: str) -> None:
    err.print(message)


def success(message: str) -> None:
    err.print(f"[green]{message}[/green]")


def warning(message: str) -> None:
    err.print(f"[yellow]Warning:[/yellow] {message}")


def hint(message: str) -> None:
    """The next command to run, built from the user's own arguments."""
    err.print(f"[dim]Next:[/dim] [bold]{message}[/bold]")


def error(message: str, hint_text: str | None = None) -> None:
    err.print(f"[red]Error:[/red] {message}", highlight=False, soft_wrap=True)
    if hint_text:
        err.print(f"[dim]Hint:[/dim] {hint_text}", highlight=False, soft_wrap=True)
