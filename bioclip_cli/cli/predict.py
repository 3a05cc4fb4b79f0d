"""`bioclip predict`: identify new specimens against a run's key embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bioclip_cli.cli.options import RunOpt, examples
from bioclip_cli.errors import NotAvailableYet

EXAMPLES = examples(
    "bioclip predict specimen.jpg --run runs/demo",
    "bioclip predict a.jpg b.jpg --run runs/idt-5m --k 5 --format csv",
    "bioclip predict --dna-fasta barcodes.fasta --run runs/idt-5m --format json",
)


def command(
    images: Annotated[list[Path] | None, typer.Argument(help="Specimen photographs.", show_default=False)] = None,
    run: RunOpt = None,
    dna: Annotated[list[str] | None, typer.Option("--dna", help="A DNA barcode (repeatable).", show_default=False)] = None,
    dna_fasta: Annotated[Path | None, typer.Option("--dna-fasta", help="FASTA file of barcodes.", show_default=False)] = None,
    k: Annotated[int, typer.Option("--k", help="Nearest reference specimens to show.")] = 5,
    format: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
) -> None:
    """Embed the inputs and list the top-k nearest reference specimens with taxonomy and a consensus label."""
    raise NotAvailableYet("bioclip predict (specimen identification)")
