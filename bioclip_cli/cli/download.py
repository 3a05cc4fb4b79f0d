"""`bioclip download`: verified, resumable downloads of data, checkpoints, encoders and embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bioclip_cli.cli.options import PresetOpt, examples
from bioclip_cli.errors import NotAvailableYet

EXAMPLES = examples(
    "bioclip download 5m --dry-run",
    "bioclip download 5m --what raw --root data/",
    "bioclip download checkpoints --preset idt-5m",
    "bioclip download embeddings --preset idt-1m",
)
NO_ARGS_IS_HELP = True


def command(
    target: Annotated[str, typer.Argument(help="What to fetch: 5m, 1m, checkpoints, embeddings or encoders.")],
    what: Annotated[
        str, typer.Option("--what", help="For 5m/1m: hdf5 (pre-built), raw (metadata + images), metadata, partition.")
    ] = "hdf5",
    preset: PresetOpt = None,
    root: Annotated[Path, typer.Option("--root", help="Put everything under this folder.")] = Path("."),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be fetched; write nothing.")] = False,
    mirror: Annotated[
        str | None, typer.Option("--mirror", help="Fetch the same paths from this base URL instead.", show_default=False)
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Files downloaded in parallel.")] = 2,
) -> None:
    """Download the BIOSCAN datasets, checkpoints, pretrained encoders or released embeddings.

    Every file is fetched to `<dest>.part` with HTTP range resume, checked against its published
    size and checksum, and only then renamed into place; re-running skips verified files.
    """
    raise NotAvailableYet("bioclip download (verified, resumable downloads)")
