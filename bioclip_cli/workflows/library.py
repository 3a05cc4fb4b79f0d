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

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bioclip_cli.data.embedding_file import read_embedding_file
from bioclip_cli.data.specimen_file import (
    FORMAT,
    SpecimenVectors,
    merge_specimen_files,
    read_specimen_file,
    vectors_from_arrays,
    write_specimen_file,
)
from bioclip_cli.data.taxonomy import LEVELS
from bioclip_cli.errors import BioclipError, DataError

_PUBLISHED = re.compile(r"extracted_feature_from_(\w+)_split\.hdf5$")
UNKNOWN_MODEL = ""  # fingerprint of vectors whose model cannot be named (released files)


@dataclass
class LibraryResult:
    out: Path
    rows: int
    features: dict[str, int]
    model_fingerprint: str
    sources: list[str]


def _is_specimen_file(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT
    except OSError:
        return False


def _run_fingerprint(h5_path: Path, split: str) -> str:
    """The model fingerprint of a run's exported embeddings (embeddings/embed_{split}.json names the checkpoint
    and the run's config.yaml the model), or UNKNOWN_MODEL."""
    from bioclip_cli.config import load_run_config
    from bioclip_cli.models.fingerprint import model_fingerprint

    info_path = h5_path.parent / f"embed_{split}.json"
    config = h5_path.parent.parent / "config.yaml"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, json.JSONDecodeError):
        return UNKNOWN_MODEL
    checkpoint = info.get("checkpoint")
    if not config.is_file() or (checkpoint and not Path(checkpoint).exists()):
        return UNKNOWN_MODEL
    return model_fingerprint(load_run_config(config), checkpoint)


def vectors_from_published(h5_path: Path) -> SpecimenVectors:
    """The key group of a published-layout embedding file as library vectors."""
    match = _PUBLISHED.search(h5_path.name)
    if match is None:
        raise DataError(
            h5_path,
            f"{h5_path.name} is neither a specimen embeddings file nor an extracted_feature_from_<split>_split.hdf5",
            "give files made by `bioclip embed`",
        )
    split = match.group(1)
    labels = h5_path.with_name(f"labels_{split}.json")
    with read_embedding_file(h5_path, labels) as ef:
        n = ef.n_rows("key")
        ids = ef.sample_ids.get("key")
        ids = [str(i) for i in ids] if ids is not None else [f"key row {i}" for i in range(n)]
        arrays = {name: ef.dataset("key", name)[()] for name in ("image", "dna", "avg") if ef.has("key", name)}
        taxonomy = {lv: [str(v) for v in ef.labels["key"][lv]] for lv in LEVELS if lv in ef.labels["key"]}
    if not arrays:
        raise DataError(h5_path, f"{h5_path.name}: the key group has no image, DNA or averaged embeddings")
    fingerprint = _run_fingerprint(h5_path, split)
    return vectors_from_arrays(ids, taxonomy, arrays, fingerprint, sources=[str(h5_path)])


def load_vectors(path: str | Path) -> SpecimenVectors:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    return read_specimen_file(path) if _is_specimen_file(path) else vectors_from_published(path)


def build_library(sources: list[str | Path], out: str | Path) -> LibraryResult:
    """Merge the sources into one reference library at `out` (refusing vectors of different models)."""
    if not sources:
        raise BioclipError(
            "library build needs at least one --from FILE", "bioclip library build --from emb.h5 --out lib.h5"
        )
    parts = [load_vectors(p) for p in sources]
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
