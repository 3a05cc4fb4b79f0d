"""The one output sink of the command line: data to stdout, messages and bars to stderr.

`emit` is the output convention every command that prints a table follows (`--format table|json|csv`,
`--output FILE`): the rich table, or JSON/CSV on stdout or in a file written atomically. `print_table`
renders rows (a list of dicts) as a rich table; `write_json` / `write_csv` write rows for machines.
When stdout is not a terminal (a pipe, a file), tables are printed at their natural width: no value is
cut with an ellipsis or folded across lines, so `grep` finds whole URLs and paths. Commands never call
print() directly.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bioclip_cli.atomic_write import resolve_output, write_text

console = Console()  # stdout: results
err = Console(stderr=True)  # stderr: messages, warnings, hints, progress

Format = Literal["table", "json", "csv"]
_UNBOUNDED_WIDTH = 100_000  # a table printed to a pipe is as wide as its longest row needs


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.4g}"
        return f"{value:.4f}"
    if value is None:
        return "-"
    return str(value)


def print_table(
    rows: Sequence[dict],
    title: str | None = None,
    columns: Sequence[str] | None = None,
    fold: bool = False,
    stream: Console | None = None,
) -> None:
    """Print rows as a table; `columns` picks and orders the keys (default: keys of the first row).

    On a terminal, `fold=True` wraps long values (URLs, paths) onto more lines instead of cutting them with
    an ellipsis. Not on a terminal, nothing is cut or wrapped. `stream` is stdout's console unless given
    (the stderr console for tables that are progress, not results).
    """
    stream = stream or console
    if not rows:
        err.print(f"[yellow]{title or 'table'}: nothing to show[/yellow]")
        return
    columns = list(columns or rows[0].keys())
    whole = not stream.is_terminal
    table = Table(title=title, show_lines=False, header_style="bold")
    for col in columns:
        numeric = all(isinstance(r.get(col), (int, float)) or r.get(col) is None for r in rows)
        table.add_column(
            str(col),
            justify="right" if numeric else "left",
            overflow="fold" if fold else "ellipsis",
            no_wrap=whole,
        )
    for row in rows:
        table.add_row(*(_fmt(row.get(col)) for col in columns))
    if whole:  # a console as wide as the table needs (Console.print's own `width` is capped at the console's)
        stream = Console(file=stream.file, width=_UNBOUNDED_WIDTH, no_color=stream.no_color, highlight=False)
    stream.print(table, crop=not whole)


def check_outputs(*paths: str | Path | None) -> None:
    """Refuse, before any work, output paths that are folders, devices or pipes (one sentence each)."""
    for path in paths:
        if path is not None:
            resolve_output(path)


def emit(
    rows: Sequence[dict],
    fmt: Format = "table",
    output: str | Path | None = None,
    *,
    title: str | None = None,
    columns: Sequence[str] | None = None,
    json_obj: Any = None,
    table_rows: Sequence[dict] | None = None,
    fold: bool = False,
    show_table: Callable[[], None] | None = None,
) -> bool:
    """Show a command's result the way `--format`/`--output` ask; True when stdout got the table.

    `--output FILE` writes the data to FILE (atomically): JSON when its name ends in .json, CSV when it
    ends in .csv, otherwise in `fmt` (CSV when `fmt` is table). stdout then shows `fmt` unless FILE
    received exactly that: `--format json --output r.json` writes the file only, `--output r.csv` with the
    default table prints the table and writes the CSV.
    JSON is `json_obj` (default `rows`); CSV and the table are `rows` (`columns` first; the table shows
    `table_rows` instead when given, e.g. values formatted for reading; `show_table` replaces the one table
    by the command's own, e.g. one table per input). JSON and CSV on stdout are never mixed with messages
    or progress: those go to stderr.
    """
    obj = rows if json_obj is None else json_obj
    written = None
    if output is not None:
        suffix = Path(output).suffix.lower()
        written = "json" if suffix == ".json" else "csv" if suffix == ".csv" or fmt == "table" else fmt
        path = write_json(output, obj) if written == "json" else write_csv(output, rows, columns)
        info(f"wrote {path}")
    if fmt == written:
        return False
    if fmt == "table" and show_table is not None:
        show_table()
        return True
    if fmt == "table":
        print_table(table_rows if table_rows is not None else rows, title=title, columns=columns, fold=fold)
        return True
    console.file.write(json_text(obj) if fmt == "json" else csv_text(rows, columns))
    console.file.flush()
    return False


def json_text(obj: Any) -> str:
    """`obj` as indented JSON text ending in a newline (paths and other objects as strings)."""
    return json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"


def csv_text(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """Rows as CSV text with a header; `columns` picks and orders the keys (default: the first row's)."""
    import io

    columns = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented JSON (atomically)."""
    return write_text(path, json_text(obj))


def write_csv(path: str | Path, rows: Sequence[dict], columns: Sequence[str] | None = None) -> Path:
    """Write rows as CSV with a header (atomically)."""
    return write_text(path, csv_text(rows, columns))


def info(message: str) -> None:
    err.print(message)


def success(message: str) -> None:
    err.print(f"[green]{message}[/green]")


def warning(message: str) -> None:
    err.print(f"[yellow]Warning:[/yellow] {escape(message)}")


def hint(message: str) -> None:
    """The next command to run, built from the user's own arguments."""
    err.print(f"[dim]Next:[/dim] [bold]{message}[/bold]")


def error(message: str, hint_text: str | None = None) -> None:
    # messages are plain text: brackets such as `pip install "bioscan-clip[plots]"` are not rich markup
    err.print(f"[red]Error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    if hint_text:
        err.print(f"[dim]Hint:[/dim] {escape(hint_text)}", highlight=False, soft_wrap=True)
