"""Embeddings of a user's specimens, and reference libraries built from them: one HDF5 layout for both.

Layout::

    attrs   format = "bioscan-clip specimens", kind = "embeddings" | "library", version = 1,
            model_fingerprint (the model that made the vectors), checkpoint_sha256, created_by, sources
    ids                    [N]     the specimens' ids (UTF-8)
    order, family, genus, species  [N] taxonomy (not_classified where unknown)
    features/<name>        [N, d]  float32 unit vectors; name = image, dna or avg ((image + dna) / 2)
    features/<name>_rows   [N]     bool: which rows have that feature (a specimen without a photo has no image)

A reference library is the same file with ``kind = "library"``: `bioclip predict --keys LIB` searches it.
Every file records the fingerprint of the model that embedded it; vectors of two models live in different
spaces, so :func:`merge_specimen_files` refuses to mix them and `predict` refuses a library made by another
model than the run's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bioclip_cli.atomic_write import atomic_output
from bioclip_cli.data.taxonomy import LEVELS, NOT_CLASSIFIED
from bioclip_cli.errors import DataError

FORMAT = "bioscan-clip specimens"
VERSION = 1
FEATURES: tuple[str, ...] = ("image", "dna", "avg")
KINDS = ("embeddings", "library")


@dataclass
class SpecimenVectors:
    """Embeddings of specimens in memory: ids, taxonomy, and per feature its rows and unit vectors."""

    ids: list[str]
    taxonomy: dict[str, list[str]]  # level -> names, row-aligned with ids
    features: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (rows bool [N], vectors float32 [N, d])
    model_fingerprint: str
    checkpoint_sha256: str = ""
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def vectors(self, feature: str) -> tuple[np.ndarray, np.ndarray]:
        """(row indices that have `feature`, their vectors [n, d])."""
        if feature not in self.features:
            have = ", ".join(self.features) or "none"
            raise DataError(
                "<specimens>", f"no {feature} embeddings in this file (it has: {have})", "embed that modality too"
            )
        rows, vecs = self.features[feature]
        index = np.flatnonzero(rows)
        return index, vecs[index]


def with_average(vectors: SpecimenVectors) -> SpecimenVectors:
    """Add the ``avg`` feature ((image + dna) / 2) for the rows that have both, as the published files do."""
    if "image" in vectors.features and "dna" in vectors.features and "avg" not in vectors.features:
        (ri, vi), (rd, vd) = vectors.features["image"], vectors.features["dna"]
        both = ri & rd
        avg = np.zeros_like(vi)
        avg[both] = (vi[both] + vd[both]) / 2
        vectors.features["avg"] = (both, avg)
    return vectors


def write_specimen_file(path: str | Path, vectors: SpecimenVectors, kind: str = "embeddings") -> Path:
    """Write `vectors` atomically in the layout above."""
    import h5py

    from bioclip_cli import __version__

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    needed = sum(v.nbytes for _, v in vectors.features.values())
    with atomic_output(path, needed=needed) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(
            format=FORMAT, kind=kind, version=VERSION, model_fingerprint=vectors.model_fingerprint,
            checkpoint_sha256=vectors.checkpoint_sha256, created_by=f"bioscan-clip {__version__}",
            sources="\n".join(vectors.sources),
        )  # fmt: skip
        text = h5py.string_dtype("utf-8")
        f.create_dataset("ids", data=np.array(vectors.ids, dtype=object), dtype=text)
        for level in LEVELS:
            names = vectors.taxonomy.get(level) or [NOT_CLASSIFIED] * len(vectors)
            f.create_dataset(level, data=np.array(names, dtype=object), dtype=text)
        group = f.create_group("features")
        for name, (rows, vecs) in vectors.features.items():
            group.create_dataset(name, data=np.asarray(vecs, dtype=np.float32))
            group.create_dataset(f"{name}_rows", data=np.asarray(rows, dtype=bool))
    return Path(path)


def read_specimen_file(path: str | Path) -> SpecimenVectors:
    """Read a file written by :func:`write_specimen_file`; DataError for anything else."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise DataError(
            path, f"{path} is not an HDF5 file", "give a file made by `bioclip embed` or `library build`"
        ) from None
    with f:
        if f.attrs.get("format") != FORMAT:
            raise DataError(
                path,
                f"{path} is not a bioscan-clip specimen embeddings file or library",
                "make one with `bioclip embed --images/--fasta/--manifest ... --out F` or `bioclip library build`",
            )
        ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f["ids"][()]]
        taxonomy = {lv: [s.decode() if isinstance(s, bytes) else str(s) for s in f[lv][()]] for lv in LEVELS if lv in f}
        features = {}
        for name in FEATURES:
            if name in f["features"]:
                vecs = f["features"][name][()].astype(np.float32, copy=False)
                rows = f["features"][f"{name}_rows"][()].astype(bool)
                if vecs.shape[0] != len(ids) or rows.shape != (len(ids),):
                    raise DataError(path, f"{path}: features/{name} has {vecs.shape[0]} rows for {len(ids)} ids")
                features[name] = (rows, vecs)
        sources = [s for s in str(f.attrs.get("sources", "")).split("\n") if s]
        return SpecimenVectors(
            ids,
            taxonomy,
            features,
            str(f.attrs.get("model_fingerprint", "")),
            str(f.attrs.get("checkpoint_sha256", "")),
            sources,
        )


def merge_specimen_files(parts: Sequence[SpecimenVectors], names: Sequence[str]) -> SpecimenVectors:
    """One set of vectors from several (rows in order); refuses vectors of different models or duplicate ids."""
    first = parts[0]
    for part, name in zip(parts[1:], names[1:]):
        if part.model_fingerprint != first.model_fingerprint:
            raise DataError(
                name,
                f"{name} was embedded by another model than {names[0]} (fingerprints {part.model_fingerprint[:12]} vs "
                f"{first.model_fingerprint[:12]}); vectors of two models cannot be searched together",
                "embed every specimen with the same run or checkpoint",
            )
    ids = [i for p in parts for i in p.ids]
    seen: set[str] = set()
    dupes = [i for i in ids if i in seen or seen.add(i)]
    if dupes:
        raise DataError(
            names[0],
            f"{len(dupes)} id(s) appear in more than one input (first: {dupes[0]})",
            "give each specimen one id",
        )
    taxonomy = {lv: [n for p in parts for n in (p.taxonomy.get(lv) or [NOT_CLASSIFIED] * len(p))] for lv in LEVELS}
    features = {}
    for name in FEATURES:  # a feature some parts lack is kept: their rows are marked as not having it
        widths = {p.features[name][1].shape[1] for p in parts if name in p.features}
        if len(widths) > 1:
            raise DataError(names[0], f"the inputs' {name} embeddings have different widths {sorted(widths)}")
        if widths:
            (d,) = widths
            rows = [p.features[name][0] if name in p.features else np.zeros(len(p), bool) for p in parts]
            vecs = [p.features[name][1] if name in p.features else np.zeros((len(p), d), np.float32) for p in parts]
            features[name] = (np.concatenate(rows), np.concatenate(vecs))
    sources = [s for p, n in zip(parts, names) for s in (p.sources or [str(n)])]
    return SpecimenVectors(ids, taxonomy, features, first.model_fingerprint, first.checkpoint_sha256, sources)


def vectors_from_arrays(
    ids: Sequence[str],
    taxonomy: Mapping[str, Sequence[str]],
    arrays: Mapping[str, np.ndarray],
    model_fingerprint: str,
    checkpoint_sha256: str = "",
    sources: Sequence[str] = (),
) -> SpecimenVectors:
    """Vectors where every row has every feature given (e.g. the key group of a published embedding file)."""
    n = len(ids)
    features = {}
    for name, vecs in arrays.items():
        vecs = np.asarray(vecs, dtype=np.float32)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        features[name] = (np.ones(n, dtype=bool), vecs / np.where(norms > 0, norms, 1))
    return SpecimenVectors(list(ids), {lv: list(v) for lv, v in taxonomy.items()}, features, model_fingerprint,
                           checkpoint_sha256, list(sources))  # fmt: skip


# ---------------------------------------------------------------------------------- other formats


def write_npz(path: str | Path, vectors: SpecimenVectors) -> Path:
    """numpy's archive of arrays (`numpy.load(path)`): ids, the taxonomy levels, and per feature `<name>`
    [N, d] with `<name>_rows` (which rows have it)."""
    arrays = {"ids": np.array(vectors.ids, dtype=str)}
    arrays.update(
        {lv: np.array(vectors.taxonomy.get(lv) or [NOT_CLASSIFIED] * len(vectors), dtype=str) for lv in LEVELS}
    )
    for name, (rows, vecs) in vectors.features.items():
        arrays[name] = vecs
        arrays[f"{name}_rows"] = rows
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return Path(path)


def write_parquet(path: str | Path, vectors: SpecimenVectors) -> Path:
    """A Parquet table: an `id` column, the taxonomy levels, and one list<float32> column per feature (null
    where a specimen lacks it). Needs pyarrow (`pip install "bioscan-clip[parquet]"`)."""
    from bioclip_cli.errors import BioclipError

    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise BioclipError(
            "--format parquet needs the pyarrow package, which is not installed",
            'pip install "bioscan-clip[parquet]"  (or use --format hdf5 or npy)',
        ) from None
    columns = {"id": pa.array(vectors.ids, pa.string())}
    for lv in LEVELS:
        columns[lv] = pa.array(vectors.taxonomy.get(lv) or [NOT_CLASSIFIED] * len(vectors), pa.string())
    for name, (rows, vecs) in vectors.features.items():
        d = vecs.shape[1]
        flat = pa.array(np.ascontiguousarray(vecs, dtype=np.float32).reshape(-1), pa.float32())
        offsets = pa.array(np.arange(0, (len(vecs) + 1) * d, d, dtype=np.int32))
        lists = pa.ListArray.from_arrays(offsets, flat, mask=pa.array(~rows))
        columns[name] = lists
    table = pa.table(columns)
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)
