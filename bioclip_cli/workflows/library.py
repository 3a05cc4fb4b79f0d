"""`bioclip library build`: a reference library (embeddings + taxonomy + ids + the model's fingerprint).

Sources (`--from`, repeatable):
- specimen embeddings written by `bioclip embed --images/--fasta/--manifest ... --out F` (our specimen
  HDF5, :mod:`bioclip_cli.data.specimen_file`);
- a published-layout embedding file (`extracted_feature_from_{split}_split.hdf5` with its `labels_{split}.json`
  beside it: ours from `bioclip embed --run R`, or a released one): its key group becomes the library.

Vectors of two models live in different spaces: sources with different model fingerprints are refused. A
published-layout file exported by `bioclip embed --run R` gets its run's fingerprint (from the run's
configuration and checkpoint); a released file has none, and the library says the model is unknown
(`predict --keys` then warns instead of checking).

`bioclip library build --manifest M --run R` (embed the manifest's specimens and make them a library in one
step) goes through the embed workflow (:func:`bioclip_cli.workflows.embed.embed_specimens`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bioclip_cli.data.specimen_file import merge_specimen_files, write_specimen_file
from bioclip_cli.errors import BioclipError, DataError
from bioclip_cli.retrieval.reference_library import load_reference


@dataclass
class LibraryResult:
    out: Path
    rows: int
    features: dict[str, int]
    model_fingerprint: str
    sources: list[str]


def build_library(sources: list[str | Path], out: str | Path) -> LibraryResult:
    """Merge the sources into one reference library at `out` (refusing vectors of different models)."""
    if not sources:
        raise BioclipError(
            "library build needs at least one --from FILE", "bioclip library build --from emb.h5 --out lib.h5"
        )
    parts = [load_reference(p) for p in sources]
    names = [str(p) for p in sources]
    merged = merge_specimen_files(parts, names) if len(parts) > 1 else parts[0]
    if not merged.features:
        raise DataError(names[0], "the sources share no embedding feature (image, dna or avg) to search")
    path = write_specimen_file(out, merged, kind="library")
    return LibraryResult(
        path,
        len(merged),
        {n: int(np.count_nonzero(rows)) for n, (rows, _) in merged.features.items()},
        merged.model_fingerprint,
        merged.sources,
    )
