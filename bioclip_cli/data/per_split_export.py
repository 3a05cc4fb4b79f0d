"""Per-split embedding files in the original project's second export layout (its `Embedding.md`).

One file per dataset group, ``extracted_features_of_{group}.hdf5``, with flat datasets::

    encoded_image_feature, encoded_dna_feature, encoded_language_feature   [N, d] float64
    order_list, family_list, genus_list, species_list                      [N]    bytes
    processid (BIOSCAN-5M) or file_name (BIOSCAN-1M)                       [N]    bytes

`bioclip embed --run R --per-split` writes them for every group of the run's dataset, so tools written for
that layout read our embeddings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bioclip_cli.atomic_write import atomic_output
from bioclip_cli.data.taxonomy import LEVELS

ENCODED = {"image": "encoded_image_feature", "dna": "encoded_dna_feature", "text": "encoded_language_feature"}


def per_split_path(folder: str | Path, group: str) -> Path:
    return Path(folder) / f"extracted_features_of_{group}.hdf5"


def write_per_split_file(
    path: str | Path,
    features: Mapping[str, np.ndarray],
    labels: Mapping[str, Sequence[str]],
    ids: Sequence[str],
    id_name: str = "processid",
    dtype: str = "float64",
) -> Path:
    """Write one group's embeddings (`features`: image/dna/text -> [N, d]) in the per-split layout."""
    import h5py

    needed = sum(np.asarray(v).size * np.dtype(dtype).itemsize for v in features.values())
    with atomic_output(path, needed=needed) as tmp, h5py.File(tmp, "w") as f:
        for name, dataset in ENCODED.items():
            if name in features:
                f.create_dataset(dataset, data=np.asarray(features[name], dtype=dtype))
        for level in LEVELS:
            if level in labels:
                f.create_dataset(f"{level}_list", data=_bytes(labels[level]))
        f.create_dataset(id_name, data=_bytes(ids))
    return Path(path)


def _bytes(values: Sequence[str]) -> np.ndarray:
    """Fixed-width byte strings (UTF-8), as the original files store them."""
    return np.array([str(v).encode("utf-8") for v in values], dtype="S")
