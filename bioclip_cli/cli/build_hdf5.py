"""`bioclip build-hdf5`: the raw BIOSCAN-1M/5M releases -> the training HDF5 layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bioclip_cli.cli.options import examples
from bioclip_cli.errors import NotAvailableYet

EXAMPLES = examples(
    "bioclip build-hdf5 5m --root data/ --out data/BIOSCAN_5M/BIOSCAN_5M.hdf5",
    "bioclip build-hdf5 5m --root data/ --out eval_only.hdf5 --splits val,val_unseen,key_unseen,train",
    "bioclip build-hdf5 1m --root data/BIOSCAN_1M --out data/BIOSCAN_1M/split_data/BioScan_data_in_splits.hdf5",
)
NO_ARGS_IS_HELP = True


def command(
    dataset: Annotated[str, typer.Argument(help="Which release: 5m or 1m.")],
    root: Annotated[Path, typer.Option("--root", help="Folder holding the raw release (metadata + images).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HDF5 file to write.")],
    splits: Annotated[
        str | None, typer.Option("--splits", help="Comma-separated metadata splits to include (default: all).")
    ] = None,
) -> None:
    """Build the training HDF5 (published group layout) from the raw release.

    JPEG bytes are stored unchanged; bad rows are counted and listed in `<out>.report.json`.
    """
    raise NotAvailableYet("bioclip build-hdf5 (raw release -> HDF5)")
