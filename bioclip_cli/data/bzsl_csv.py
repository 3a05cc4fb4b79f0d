"""The two embedding files the original pipeline hands to BZSL, read and written in its exact format.

- `image_embedding_from_bioscan_clip.csv`: a [d × N] matrix, column i = the image embedding of INSECT
  row i (rows in `INSECT_metadata.csv` order);
- `dna_embedding_from_bioscan_clip.csv`: a [d × C] matrix, column j = class j's DNA embedding, the MEAN
  of the DNA embeddings of all its samples (not re-normalised after averaging).

Both are what `numpy.savetxt(path, matrix, delimiter=",")` writes (format `%.18e`, one matrix row per
line), so files written here run in the original BZSL code and the released pre-extracted files run in
ours. numpy's own writer and reader are used; the docs (docs/method.md, "INSECT dataset") describe
where the embeddings come from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bioclip_cli.atomic_write import atomic_output
from bioclip_cli.errors import DataError

IMAGE_CSV = "image_embedding_from_bioscan_clip.csv"
DNA_CSV = "dna_embedding_from_bioscan_clip.csv"
CSV_FORMAT = "%.18e"


def class_mean_embeddings(dna: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """[n_classes, d] per-class mean of the rows of `dna` [N, d] (labels 0-based); a class without rows -> error."""
    dna = np.asarray(dna, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if dna.ndim != 2 or len(dna) != len(labels):
        raise ValueError(f"dna {dna.shape} and labels {labels.shape} do not match")
    counts = np.bincount(labels, minlength=n_classes)
    if len(counts) > n_classes:
        raise ValueError(f"a label is >= n_classes ({n_classes})")
    if (counts == 0).any():
        empty = np.flatnonzero(counts == 0)
        raise ValueError(f"{len(empty)} class(es) have no rows, e.g. class {int(empty[0])}")
    sums = np.zeros((n_classes, dna.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, dna)
    return sums / counts[:, None]


def write_matrix_csv(rows_by_column: np.ndarray, path: str | Path) -> Path:
    """Write `rows_by_column` [n, d] as the [d × n] comma-separated `%.18e` matrix (column i = row i)."""
    matrix = np.asarray(rows_by_column, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {matrix.shape}")
    with atomic_output(path, needed=matrix.size * 25) as tmp:
        np.savetxt(tmp, matrix.T, delimiter=",", fmt=CSV_FORMAT)
    return Path(path)


def read_matrix_csv(path: str | Path, *, what: str) -> np.ndarray:
    """Read a [d × n] BZSL CSV back as [n, d] (row i = column i of the file); DataError when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            path,
            f"the {what} file {path} does not exist",
            "write it with `bioclip embed --format bzsl-csv`, or give the released pre-extracted file",
        )
    try:
        matrix = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DataError(path, f"{path} is not a comma-separated numeric matrix ({exc})") from None
    if matrix.size == 0:
        raise DataError(path, f"the {what} file {path} is empty")
    return np.ascontiguousarray(matrix.T)


def write_image_embeddings(image: np.ndarray, path: str | Path) -> Path:
    """`image_embedding_from_bioscan_clip.csv` from image embeddings [N, d] in INSECT row order."""
    return write_matrix_csv(image, path)


def write_dna_class_embeddings(class_dna: np.ndarray, path: str | Path) -> Path:
    """`dna_embedding_from_bioscan_clip.csv` from per-class DNA embeddings [C, d] (see class_mean_embeddings)."""
    return write_matrix_csv(class_dna, path)


def read_image_embeddings(path: str | Path) -> np.ndarray:
    """Image embeddings [N, d] from `image_embedding_from_bioscan_clip.csv`."""
    return read_matrix_csv(path, what="image embedding")


def read_dna_class_embeddings(path: str | Path) -> np.ndarray:
    """Per-class DNA embeddings [C, d] from `dna_embedding_from_bioscan_clip.csv`."""
    return read_matrix_csv(path, what="DNA embedding")
