"""INSECT embeddings for BZSL: every row's image embedding and each class's mean DNA embedding, written out.

Input rows come from the key group of an INSECT HDF5 written by `bioclip build-hdf5 insect` (``all_keys``:
every stored row, in res101 order, with its ``insect_label``, ``insect_row`` and ``insect_splits``), so the
table read back by :func:`read_insect_group` is the build's ``OUT.metadata.csv``.

Output, under a run's ``embeddings/`` folder:

- ``insect_embeddings.hdf5``: ``image`` [N, d] and ``dna`` [N, d] (L2-normalised, row i = table row i),
  ``dna_class_mean`` [C, d] (class j's mean DNA embedding over all its rows, not re-normalised),
  ``labels`` [N] (0-based classes), ``insect_row`` [N] (res101 rows) and ``sample_ids`` [N];
- with ``bzsl_csv``, ``bzsl/`` holding exactly what the original pipeline hands to BZSL:
  ``image_embedding_from_bioscan_clip.csv`` [d x N], ``dna_embedding_from_bioscan_clip.csv`` [d x C] (numpy
  savetxt, ``%.18e``; :mod:`.bzsl_csv`) and ``INSECT_metadata.csv`` (:mod:`.insect_table`) for those N rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bioclip_cli.atomic_write import atomic_output
from bioclip_cli.data.bzsl_csv import DNA_CSV, IMAGE_CSV, class_mean_embeddings, write_matrix_csv
from bioclip_cli.data.insect_build import CLASSES_ATTR, LABEL_DATASET, ROW_DATASET, SPLITS_DATASET
from bioclip_cli.data.insect_table import SPLITS, InsectTable, write_insect_metadata
from bioclip_cli.errors import DataError

EMBEDDINGS_FILE = "insect_embeddings.hdf5"
BZSL_DIR = "bzsl"
METADATA_CSV = "INSECT_metadata.csv"
BUILD_HINT = "build the INSECT HDF5 with `bioclip build-hdf5 insect --root R --out F`"


def read_insect_group(h5_path: str | Path, group: str) -> tuple[InsectTable, np.ndarray, int]:
    """``(table, res101 rows, number of classes)`` of an INSECT build's group; DataError for any other file."""
    import h5py

    h5_path = Path(h5_path)
    try:
        f = h5py.File(h5_path, "r")
    except (FileNotFoundError, OSError) as exc:
        raise DataError(h5_path, f"cannot read {h5_path} ({exc})", BUILD_HINT) from None
    with f:
        if group not in f or LABEL_DATASET not in f[group] or CLASSES_ATTR not in f.attrs:
            raise DataError(
                h5_path,
                f"{h5_path} is not an INSECT build: group {group!r} has no {LABEL_DATASET} (BZSL needs the INSECT "
                "classes and splits)",
                BUILD_HINT,
            )
        g = f[group]

        def strings(name: str) -> list[str]:
            return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in g[name][()].tolist()]

        flags = np.asarray(g[SPLITS_DATASET][()], dtype=bool)
        columns = str(g[SPLITS_DATASET].attrs.get("columns", ",".join(SPLITS))).split(",")
        table = InsectTable(
            bold_ids=strings("bold_id"),
            ids=strings("processid"),
            labels=np.asarray(g[LABEL_DATASET][()], dtype=np.int64),
            species=strings("species"),
            nucleotides=strings("barcode"),
            **{s: flags[:, columns.index(s)] for s in SPLITS},
        )
        return table, np.asarray(g[ROW_DATASET][()], dtype=np.int64), int(f.attrs[CLASSES_ATTR])


def class_means(dna: np.ndarray, labels: np.ndarray, n_classes: int, source: str | Path) -> np.ndarray:
    """Each class's mean DNA embedding [C, d]; DataError when a class has no row (its images were all bad)."""
    counts = np.bincount(labels, minlength=n_classes)
    if (counts == 0).any():
        empty = np.flatnonzero(counts == 0)
        raise DataError(
            source,
            f"{len(empty)} INSECT class(es) have no stored row (e.g. class {int(empty[0])}), so their DNA "
            "embedding is undefined",
            "see the build's .report.json for the images that were left out, and rebuild with them in place",
        )
    return class_mean_embeddings(dna, labels, n_classes)


def write_insect_embeddings(
    out_dir: str | Path,
    image: np.ndarray,
    dna: np.ndarray,
    table: InsectTable,
    rows: np.ndarray,
    n_classes: int,
    *,
    bzsl_csv: bool = False,
    source: str | Path = "",
) -> list[Path]:
    """Write :data:`EMBEDDINGS_FILE` (and with `bzsl_csv` the ``bzsl/`` trio) under `out_dir`; the paths written."""
    import h5py

    out_dir = Path(out_dir)
    image, dna = np.asarray(image, dtype=np.float32), np.asarray(dna, dtype=np.float32)
    if image.shape[0] != len(table) or dna.shape[0] != len(table):
        raise ValueError(f"{len(table)} rows but image {image.shape} and dna {dna.shape} embeddings")
    means = class_means(dna, table.labels, n_classes, source)
    path = out_dir / EMBEDDINGS_FILE
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("image", data=image)
        f.create_dataset("dna", data=dna)
        f.create_dataset("dna_class_mean", data=means)
        f.create_dataset("labels", data=table.labels)
        f.create_dataset("insect_row", data=np.asarray(rows, dtype=np.int64))
        f.create_dataset("sample_ids", data=np.array(table.ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
        f.attrs["n_classes"] = n_classes
        f.attrs["source"] = str(source)
    written = [path]
    if bzsl_csv:
        folder = out_dir / BZSL_DIR
        written += [
            write_matrix_csv(image, folder / IMAGE_CSV),
            write_matrix_csv(means, folder / DNA_CSV),
            write_insect_metadata(table, folder / METADATA_CSV),
        ]
    return written
