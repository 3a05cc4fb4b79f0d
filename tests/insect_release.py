"""A tiny synthetic INSECT release, raw (BZSL .mat files + species folders of JPEGs) or processed, for tests.

Six classes of six rows (36 rows, res101 order = class by class, interleaved so that groups are not
contiguous): classes 0-3 are seen (4 train rows + 2 test_seen rows each), class 4 is the unseen validation
class (val_loc), class 5 the unseen test class (test_unseen_loc). trainval = train + val. Each class has its
own image colour and a barcode of its own, so that a model can learn the classes.

Bad rows, as a real download may have: row 7's image file is missing, row 13's is not a JPEG, class 5's
species is not in the taxonomy table, row 20 has an empty barcode. Row 3's image is stored as ``.JPG``.
The variable names and 1-based indices are those of the real files; ``ids`` / ``bold_ids`` /
``nucleotides`` are MATLAB cell arrays, ``species`` a char matrix, labels and locs double columns.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

SPECIES = [  # the first five are in the packaged taxonomy table; the last is not
    "Othius myrmecophilus",
    "Poecilus cupreus",
    "Tipula bergrothiana",
    "Armigeres subalbatus",
    "Dicranomyia (Dicranomyia) longipennis",
    "Madeupus fictus",
]
PER_CLASS = 6
N_ROWS = PER_CLASS * len(SPECIES)
MISSING_ROW, CORRUPT_ROW, EMPTY_BARCODE_ROW, UPPER_JPG_ROW = 7, 13, 20, 3
COLOURS = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (230, 220, 30), (200, 40, 210), (20, 210, 220)]
BASES = "ACGT"


def _jpeg(colour: tuple[int, int, int], seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None] + rng.integers(-20, 20, (30, 40, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def rows() -> dict:
    """The table: labels (0-based), ids, bold_ids, species, nucleotides, split masks, images (bytes)."""
    labels = np.repeat(np.arange(len(SPECIES)), PER_CLASS)
    order = np.argsort(np.tile(np.arange(PER_CLASS), len(SPECIES)), kind="stable")  # interleave the classes
    labels = labels[order]
    n = len(labels)
    rank = np.zeros(n, dtype=int)  # the row's position within its class
    for c in range(len(SPECIES)):
        rank[labels == c] = np.arange(PER_CLASS)
    rng = np.random.default_rng(0)
    class_seq = ["".join(rng.choice(list(BASES), 60)) for _ in SPECIES]
    nucleotides = []
    for i in range(n):
        seq = list(class_seq[labels[i]])
        seq[i % 60] = BASES[(BASES.index(seq[i % 60]) + 1) % 4]  # one mutation per specimen
        nucleotides.append("".join(seq))
    nucleotides[EMPTY_BARCODE_ROW] = ""
    seen = labels <= 3
    train = seen & (rank < 4)
    test_seen = seen & (rank >= 4)
    val = labels == 4
    test_unseen = labels == 5
    images = [_jpeg(COLOURS[labels[i]], i) for i in range(n)]
    images[CORRUPT_ROW] = b"this is not a jpeg"
    return {
        "labels": labels,
        "ids": [f"IMG{i:04d}" for i in range(n)],
        "bold_ids": [f"BOLD{i:04d}-19" for i in range(n)],
        "species": [SPECIES[c] for c in labels],
        "nucleotides": nucleotides,
        "trainval": train | val,
        "train": train,
        "val": val,
        "test_seen": test_seen,
        "test_unseen": test_unseen,
        "images": images,
    }


def _cells(values: list[str]) -> np.ndarray:
    cells = np.empty((len(values), 1), dtype=object)
    cells[:, 0] = values
    return cells


def write_raw(root: Path) -> dict:
    """res101.mat + att_splits.mat + images/<species>/<id>.jpg under `root`; returns :func:`rows`."""
    from scipy.io import savemat

    t = rows()
    root.mkdir(parents=True, exist_ok=True)
    n = len(t["labels"])
    savemat(
        root / "res101.mat",
        {
            "features": np.zeros((2048, n), dtype=np.float32),
            "labels": (t["labels"] + 1).astype(np.float64)[:, None],
            "ids": _cells(t["ids"]),
            "bold_ids": _cells(t["bold_ids"]),
            "species": np.array(t["species"]),  # a char matrix (space padded)
            "nucleotides": _cells(t["nucleotides"]),
        },
    )
    locs = {f"{s}_loc": (np.flatnonzero(t[s]) + 1).astype(np.float64)[:, None] for s in
            ("trainval", "train", "val", "test_seen", "test_unseen")}  # fmt: skip
    savemat(root / "att_splits.mat", {**locs, "att": np.zeros((4, len(SPECIES)))})
    for i in range(n):
        if i == MISSING_ROW:
            continue
        folder = root / "images" / t["species"][i]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{t['ids'][i]}{'.JPG' if i == UPPER_JPG_ROW else '.jpg'}").write_bytes(t["images"][i])
    return t


def write_processed(root: Path) -> dict:
    """INSECT_metadata.csv + INSECT_images.hdf5 under `root` (the same rows and bad inputs); returns :func:`rows`."""
    import h5py

    from bioclip_cli.data.insect_table import InsectTable, write_insect_metadata

    t = rows()
    root.mkdir(parents=True, exist_ok=True)
    fields = ("bold_ids", "ids", "labels", "species", "nucleotides", "trainval", "train", "val", "test_seen",
              "test_unseen")  # fmt: skip
    write_insect_metadata(InsectTable(**{f: t[f] for f in fields}), root / "INSECT_metadata.csv")
    with h5py.File(root / "INSECT_images.hdf5", "w") as f:
        group = f.create_group("images")
        for i, (name, data) in enumerate(zip(t["ids"], t["images"])):
            if i != MISSING_ROW:
                group.create_dataset(name, data=np.frombuffer(data, dtype=np.uint8))
    return t
