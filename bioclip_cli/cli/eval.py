"""`bioclip eval`: the paper's retrieval metrics on our or the released embedding files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bioclip_cli.cli.options import CsvOpt, JsonOpt, RunOpt, SplitOpt, examples
from bioclip_cli.errors import NotAvailableYet

EXAMPLES = examples(
    "bioclip eval --run runs/idt-5m --query image --key dna",
    "bioclip eval --embeddings extracted_feature_from_val_split.hdf5 --labels labels_val.json --json results.json",
    "bioclip eval --run runs/demo --k 1,5 --levels genus,species --csv results.csv",
)


def command(
    run: RunOpt = None,
    embeddings: Annotated[Path | None, typer.Option("--embeddings", help="extracted_feature_from_*_split.hdf5", show_default=False)] = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="labels_*.json beside the embeddings.", show_default=False)] = None,
    split: SplitOpt = "val",
    query: Annotated[list[str] | None, typer.Option("--query", help="Query feature(s): image, dna, text, avg, concat.", show_default=False)] = None,
    key: Annotated[list[str] | None, typer.Option("--key", help="Key feature(s): image, dna, text, avg, concat, all.", show_default=False)] = None,
    k: Annotated[str, typer.Option("--k", help="Comma-separated k of top-k.")] = "1,3,5",
    levels: Annotated[str, typer.Option("--levels", help="Comma-separated taxonomic levels.")] = "order,family,genus,species",
    json_out: JsonOpt = None,
    csv_out: CsvOpt = None,
) -> None:
    """Micro and macro top-k accuracy per level, seen and unseen, and their harmonic mean."""
    raise NotAvailableYet("bioclip eval (retrieval metrics)")
