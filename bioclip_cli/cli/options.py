"""Option types shared by the commands, so that `--run`, `--preset`, `--json`... read the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    str,
    typer.Option("--split", help="Query split: val (val_seen + val_unseen) or test (test_seen + test_unseen)."),
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
DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device", help="torch device (cpu, cuda, cuda:1, mps); default: the best available.", show_default=False
    ),
]
BatchSizeOpt = Annotated[
    int | None, typer.Option("--batch-size", help="Batch size (overrides the preset).", show_default=False)
]


def examples(*lines: str) -> str:
    """The `Examples:` epilog of a command's --help, one example per line."""
    body = "\n\n".join(f"  [bold]$ {line}[/bold]" for line in lines)
    return f"[b]Examples[/b]\n\n{body}"
