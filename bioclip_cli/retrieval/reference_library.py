"""Reference libraries to search: load one (ours, or a published embedding file), check its model, search it.

:func:`load_reference` reads a specimen library / specimen embeddings file
(:mod:`bioclip_cli.data.specimen_file`) or the key group of a published-layout embedding file
(`extracted_feature_from_{split}_split.hdf5` + `labels_{split}.json`). A published file exported from a run
gets that run's model fingerprint (from `embeddings/embed_{split}.json`, which names the checkpoint, and the
run's `config.yaml`); a released file has none (``UNKNOWN_MODEL``).

:class:`ReferenceIndex` picks the search by size (`index="auto"`): exact (faiss `IndexFlatIP`) up to
``AUTO_IVF_KEYS`` vectors; above it an IVF index, whose recall@k against exact search is measured on a sample
of the queries and reported; below ``MIN_RECALL`` the answer falls back to exact search. `index="flat"` or
`"ivf"` overrides the choice.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from bioclip_cli.data.embedding_file import read_embedding_file
from bioclip_cli.data.specimen_file import FORMAT, SpecimenVectors, read_specimen_file, vectors_from_arrays
from bioclip_cli.data.taxonomy import LEVELS
from bioclip_cli.errors import BioclipError, DataError
from bioclip_cli.retrieval.search import FlatIndex, IVFIndex

UNKNOWN_MODEL = ""  # the fingerprint of vectors whose model cannot be named (released files)
AUTO_IVF_KEYS = 1_000_000
MIN_RECALL = 0.95
RECALL_SAMPLE = 200
INDEXES = ("auto", "flat", "ivf")
_PUBLISHED = re.compile(r"extracted_feature_from_(\w+)_split\.hdf5$")


def _is_specimen_file(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT
    except OSError:
        return False


def run_model_fingerprint(h5_path: Path, split: str) -> str:
    """The model fingerprint of a run's exported embeddings, or UNKNOWN_MODEL when the file is not a run's."""
    from bioclip_cli.config import load_run_config
    from bioclip_cli.models.fingerprint import model_fingerprint

    info_path = h5_path.parent / f"embed_{split}.json"
    config = h5_path.parent.parent / "config.yaml"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, json.JSONDecodeError):
        return UNKNOWN_MODEL
    checkpoint = info.get("checkpoint") if isinstance(info, dict) else None
    if not config.is_file() or (checkpoint and not Path(checkpoint).exists()):
        return UNKNOWN_MODEL
    return model_fingerprint(load_run_config(config), checkpoint)


def vectors_from_published(h5_path: Path) -> SpecimenVectors:
    """The key group of a published-layout embedding file as reference vectors."""
    match = _PUBLISHED.search(h5_path.name)
    if match is None:
        raise DataError(
            h5_path,
            f"{h5_path.name} is neither a specimen library nor an extracted_feature_from_<split>_split.hdf5",
            "give a file made by `bioclip library build` or `bioclip embed`",
        )
    split = match.group(1)
    with read_embedding_file(h5_path, h5_path.with_name(f"labels_{split}.json")) as ef:
        n = ef.n_rows("key")
        ids = ef.sample_ids.get("key")
        ids = [str(i) for i in ids] if ids is not None else [f"key row {i}" for i in range(n)]
        arrays = {name: ef.dataset("key", name)[()] for name in ("image", "dna", "avg") if ef.has("key", name)}
        taxonomy = {lv: [str(v) for v in ef.labels["key"][lv]] for lv in LEVELS if lv in ef.labels["key"]}
    if not arrays:
        raise DataError(h5_path, f"{h5_path.name}: the key group has no image, DNA or averaged embeddings")
    return vectors_from_arrays(ids, taxonomy, arrays, run_model_fingerprint(h5_path, split), sources=[str(h5_path)])


def load_reference(path: str | Path) -> SpecimenVectors:
    """A reference library, specimen embeddings file, or published-layout embedding file (its keys)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    return read_specimen_file(path) if _is_specimen_file(path) else vectors_from_published(path)


def check_same_model(reference: SpecimenVectors, fingerprint: str, where: str) -> str | None:
    """None when the reference was embedded by the model `fingerprint` names; a note when that is unknown;
    BioclipError when it was another model."""
    if reference.model_fingerprint == UNKNOWN_MODEL:
        return f"{where}: the model that embedded these references is unknown; make sure it is this run's"
    if reference.model_fingerprint != fingerprint:
        raise BioclipError(
            f"{where} was embedded by another model than this run's (fingerprint {reference.model_fingerprint[:12]} "
            f"vs {fingerprint[:12]}); their vectors cannot be compared",
            "rebuild the library with this run: bioclip library build --manifest M --run RUN --out LIB",
        )
    return None


class ReferenceIndex:
    """Search one feature of a reference library; rows returned are rows of the library."""

    def __init__(self, reference: SpecimenVectors, feature: str, *, index: str = "auto", device: str = "auto"):
        if index not in INDEXES:
            raise BioclipError(f"unknown --index {index!r}", f"use one of: {', '.join(INDEXES)}")
        self.rows, vectors = reference.vectors(feature)
        if not len(self.rows):
            raise DataError("<library>", f"the library has no {feature} embeddings to search")
        self.kind = index if index != "auto" else ("ivf" if len(self.rows) > AUTO_IVF_KEYS else "flat")
        self.dim = vectors.shape[1]
        self.n_keys = len(self.rows)
        self._vectors = vectors
        self._index = IVFIndex(vectors, device=device) if self.kind == "ivf" else FlatIndex(vectors, device=device)
        self.notes: list[str] = []

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, library rows) of the k nearest references of each query, best first."""
        k = min(k, self.n_keys)
        scores, found = self._index.search(queries, k)
        if self.kind == "ivf":
            recall, n = self._index.recall(queries, found, sample=RECALL_SAMPLE)
            self.notes.append(f"IVF search over {self.n_keys:,} references: recall@{k} {recall:.3f} on {n} queries")
            if recall < MIN_RECALL:
                self.notes.append(f"recall below {MIN_RECALL}: answered by exact search instead")
                scores, found = FlatIndex(self._vectors, device="cpu").search(queries, k)
        return scores, self.rows[np.maximum(found, 0)]
