"""Option types shared by the commands, so that `--run`, `--preset`, `--format`... read the same everywhere.

Options with a fixed set of values are `Literal` types: `--help` lists the values and shell completion
offers them. `--device` also accepts `cuda:N`, so it stays a string with completion of the common values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

PresetOpt = Annotated[
    str | None,
    typer.Option("--preset", "-p", help="Preset name (see `bioclip presets`) or a YAML file.", show_default=False),
]
ConfigOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--config", "-c", help="YAML file merged over the preset (repeatable; later files win).", show_default=False
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override one key, e.g. --set train.batch_size=64 (repeatable).", show_default=False
    ),
]
RunOpt = Annotated[
    Path | None,
    typer.Option("--run", "-r", help="A run directory made by `bioclip train` (e.g. runs/idt-5m).", show_default=False),
]
CheckpointOpt = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="Model weights: our checkpoint folder/.safetensors, or a published BIOSCAN-CLIP/CLIBD .pth.",
        show_default=False,
    ),
]
SplitOpt = Annotated[
    Literal["val", "test"],
    typer.Option("--split", help="Query split: val (val_seen + val_unseen) or test (test_seen + test_unseen)."),
]
WhichOpt = Annotated[Literal["best", "last"], typer.Option("--which", help="Checkpoint of the run to use.")]
FormatOpt = Annotated[
    Literal["table", "json", "csv"],
    typer.Option(
        "--format",
        "-f",
        help="table (for people), json or csv (for programs; on stdout, or in --output). Messages go to stderr.",
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        help="Write the --format json/csv output to this file instead of stdout (with table: also write the "
        "data here, JSON for a .json name, else CSV).",
        show_default=False,
    ),
]
JsonOpt = Annotated[
    Path | None,
    typer.Option("--json", help="Also write the results as JSON to this file.", show_default=False),
]
CsvOpt = Annotated[
    Path | None,
    typer.Option("--csv", help="Also write the table rows as CSV to this file.", show_default=False),
]
OutDirOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Output directory.", show_default=False)]

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def complete_device(incomplete: str) -> list[str]:
    """Shell completion of --device: the common values (any cuda:N is accepted too)."""
    return [d for d in (*DEVICE_CHOICES, "cuda:0", "cuda:1") if d.startswith(incomplete)]


DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="torch device: cpu, cuda, cuda:N or mps; default: the best available.",
        show_default=False,
        autocompletion=complete_device,
    ),
]


def examples(*lines: str) -> str:
    """The `Examples:` epilog of a command's --help, one example per line."""
    body = "\n\n".join(f"  [bold]$ {line}[/bold]" for line in lines)
    return f"[b]Examples[/b]\n\n{body}"
