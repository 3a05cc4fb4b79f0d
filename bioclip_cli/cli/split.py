"""`bioclip split 1m`: a reproducible BIOSCAN-1M partition (seen/unseen species, query/key halves)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from bioclip_cli.cli.options import examples

EXAMPLES = examples(
    "bioclip split 1m --root data/BIOSCAN_1M --seed 0 --out data/BIOSCAN_1M/partition_seed0",
    "bioclip build-hdf5 1m --root data/BIOSCAN_1M --partition data/BIOSCAN_1M/partition_seed0 --out seed0.hdf5",
)
NO_ARGS_IS_HELP = True


def command(
    dataset: Annotated[Literal["1m"], typer.Argument(help="Which partition rules: 1m (BIOSCAN-1M).")],
    root: Annotated[
        Path, typer.Option("--root", help="Folder holding BIOSCAN_Insect_Dataset_metadata.tsv (or the file).")
    ],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random draws (same seed, same partition).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the <group>.txt sampleid lists.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace partition files already in --out.")] = False,
) -> None:
    """Draw a BIOSCAN-1M partition by the published rules, reproducibly from --seed.

    Species with 10+ records: 80% seen (records 70/10/10/10 -> train/val/test/keys), 20% unseen (half val,
    half test; each species' records halved into queries and keys); 2-9 records: unseen as well; 1 record:
    single_species; no species: no_split (pretraining). Writes one <group>.txt per group for
    `bioclip build-hdf5 1m --partition`.
    """
    from bioclip_cli.cli import output
    from bioclip_cli.workflows.split import split_1m

    result = split_1m(root, out, seed, overwrite=overwrite)
    output.print_table(result.rows, title=f"BIOSCAN-1M partition, seed {seed} ({result.records:,} records)")
    output.success(f"wrote {len(result.rows)} partition files to {result.out}")
    output.hint(f"bioclip build-hdf5 1m --root {root} --partition {result.out} --out OUT.hdf5")
