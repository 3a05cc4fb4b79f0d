"""`bioclip split 1m`: draw a BIOSCAN-1M partition from the raw metadata, reproducibly from a seed.

Reads the species column of the BIOSCAN-1M metadata TSV, applies the partition rules
(:mod:`bioclip_cli.data.partition_1m`) and writes one ``{group}.txt`` file of sampleids per group (one per
line, in metadata order), the layout `bioclip build-hdf5 1m --partition DIR` reads, plus ``partition.json``
(seed, rule, counts). The published partition stays the default of `build-hdf5 1m`; this is for drawing new
ones (e.g. several seeds to measure the spread of a result).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bioclip_cli.atomic_write import write_text
from bioclip_cli.data.build_raw import METADATA_1M_NAME
from bioclip_cli.data.partition_1m import GROUPS_1M_PARTITION, partition_1m, partition_counts
from bioclip_cli.data.raw_metadata import Table
from bioclip_cli.errors import BioclipError, DataError

SUMMARY_FILE = "partition.json"


@dataclass
class SplitResult:
    out: Path
    seed: int
    records: int
    rows: list[dict]  # {group, records, species}


def find_metadata_1m(root: Path) -> Path:
    """The metadata TSV under `root` (or `root` itself when it is the file)."""
    if root.is_file():
        return root
    for candidate in (
        root / "bioscan1m" / METADATA_1M_NAME,
        root / METADATA_1M_NAME,
        root / "metadata" / METADATA_1M_NAME,
    ):
        if candidate.is_file():
            return candidate
    raise DataError(root, f"no {METADATA_1M_NAME} under {root}", "bioclip download 1m --what metadata")


def split_1m(root: str | Path, out: str | Path, seed: int, *, overwrite: bool = False) -> SplitResult:
    """Write a partition of the BIOSCAN-1M metadata under `root` into the folder `out`."""
    out = Path(out)
    if out.exists() and any(out.glob("*.txt")) and not overwrite:
        raise BioclipError(f"{out} already holds partition files; they are kept", "pass --overwrite or another --out")
    if out.exists() and not out.is_dir():
        raise BioclipError(f"{out} is not a folder", "give a folder for the <group>.txt files")
    metadata = find_metadata_1m(Path(root))
    table = Table(metadata, "\t", ("sampleid", "species"))
    sid_col, sp_col = table.columns["sampleid"], table.columns["species"]
    sampleids, species = [], []
    for row in table:
        if row:
            sampleids.append(row[sid_col] if sid_col < len(row) else "")
            species.append(row[sp_col] if sp_col < len(row) else "")
    groups = partition_1m(species, seed)
    for group in GROUPS_1M_PARTITION:
        lines = "".join(sampleids[i] + "\n" for i in groups[group].tolist())
        write_text(out / f"{group}.txt", lines)
    rows = partition_counts(groups, species)
    summary = {"rule": "1m", "seed": seed, "metadata": str(metadata), "records": len(species), "groups": rows}
    write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return SplitResult(out, seed, len(species), rows)
