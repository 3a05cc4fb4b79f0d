"""`bioclip embed`: export embeddings of the query and key groups in the published layout."""

from __future__ import annotations

from typing import Annotated

import typer

from bioclip_cli.cli.options import CheckpointOpt, ConfigOpt, OutDirOpt, PresetOpt, RunOpt, SetOpt, SplitOpt, examples
from bioclip_cli.errors import NotAvailableYet

EXAMPLES = examples(
    "bioclip embed --run runs/idt-5m",
    "bioclip embed --checkpoint ckpt/bioscan_clip/trained_with_bioscan_5m/image_dna_text.pth --preset idt-5m",
    "bioclip embed --preset none-5m --split test --out runs/none-5m",
)


def command(
    run: RunOpt = None,
    checkpoint: CheckpointOpt = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    split: SplitOpt = "val",
    out: OutDirOpt = None,
    which: Annotated[str, typer.Option("--which", help="Checkpoint of the run to use: best or last.")] = "best",
    dtype: Annotated[str, typer.Option("--dtype", help="float32, or float64 (as the released files).")] = "float32",
) -> None:
    """Encode the query groups and all_keys with every modality of the model; write the published HDF5 + labels JSON."""
    raise NotAvailableYet("bioclip embed (embedding export)")
