"""`bioclip inspect`: summarise a dataset or embedding HDF5."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bioclip_cli.cli.options import JsonOpt, examples
from bioclip_cli.errors import NotAvailableYet

EXAMPLES = examples(
    "bioclip inspect data/BIOSCAN_5M/BIOSCAN_5M.hdf5",
    "bioclip inspect runs/demo/embeddings/extracted_feature_from_val_split.hdf5 --json summary.json",
)
NO_ARGS_IS_HELP = True


def command(
    file: Annotated[Path, typer.Argument(help="A dataset HDF5 or an extracted-embedding HDF5.")],
    json_out: JsonOpt = None,
) -> None:
    """Groups, row counts, species/genus counts, JPEG and barcode stats, seen/unseen checks; or embedding shapes and norms."""
    raise NotAvailableYet("bioclip inspect (HDF5 summary)")
