"""The INSECT dataset's row table: `INSECT_metadata.csv` of the processed release, read and written.

One row per image + barcode pair, in the order of the raw release's `res101.mat` (the order every
INSECT embedding file follows). Columns, no index column::

    bold_ids, ids, labels, species, nucleotides, trainval, train, val, test_seen, test_unseen

`labels` are 0-based class ids (the .mat file's 1-based labels minus one); the last five columns are 0/1
flags naming the splits a row belongs to (the .mat `*_loc` index lists turned into masks). The splits and
their sizes are described in docs/method.md, "INSECT dataset".

The standard `csv` module reads and writes it (fields such as species names may hold commas and are
quoted as needed); no dataframe library is needed for ten columns.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bioclip_cli.atomic_write import atomic_output
from bioclip_cli.errors import DataError

SPLITS: tuple[str, ...] = ("trainval", "train", "val", "test_seen", "test_unseen")
TEXT_COLUMNS: tuple[str, ...] = ("bold_ids", "ids", "labels", "species", "nucleotides")
COLUMNS: tuple[str, ...] = TEXT_COLUMNS + SPLITS
_TRUE = {"1", "true", "True", "1.0"}
_FALSE = {"0", "false", "False", "0.0"}


@dataclass
class InsectTable:
    """The INSECT rows in file order; `labels` 0-based, one boolean mask per split."""

    bold_ids: list[str]
    ids: list[str]
    labels: np.ndarray  # int64 [N], 0-based class ids
    species: list[str]
    nucleotides: list[str]
    trainval: np.ndarray  # bool [N]
    train: np.ndarray
    val: np.ndarray
    test_seen: np.ndarray
    test_unseen: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.ids)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        for name in SPLITS:
            setattr(self, name, np.asarray(getattr(self, name), dtype=bool))
        for name in (*TEXT_COLUMNS, *SPLITS):
            if len(getattr(self, name)) != n:
                raise ValueError(f"InsectTable column {name!r} has {len(getattr(self, name))} rows, ids has {n}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_classes(self) -> int:
        """Number of classes: the largest label + 1 (labels are 0..C-1)."""
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def loc(self, split: str) -> np.ndarray:
        """0-based row indices of `split` in file order (the .mat `<split>_loc` minus one)."""
        if split not in SPLITS:
            raise ValueError(f"unknown INSECT split {split!r}; one of {', '.join(SPLITS)}")
        return np.flatnonzero(getattr(self, split))


def _flag(value: str, path: Path, line: int, column: str) -> bool:
    value = value.strip()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise DataError(
        path,
        f"{path}, line {line}: column {column!r} holds {value!r}, expected 0 or 1",
        "the split columns are 0/1 flags; re-create the file with `bioclip build-hdf5 insect`",
    )


def read_insect_metadata(path: str | Path) -> InsectTable:
    """Read `INSECT_metadata.csv`; DataError naming the file, line and column for each kind of problem."""
    path = Path(path)
    try:
        handle = open(path, newline="", encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, f"{path} does not exist", "download it with `bioclip download insect`") from None
    except OSError as exc:
        raise DataError(path, f"cannot read {path}: {exc.strerror}") from exc
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataError(path, f"{path} is empty", "expected the INSECT metadata table with a header row")
        header = [name.strip() for name in header]
        missing = [name for name in COLUMNS if name not in header]
        if missing:
            raise DataError(
                path,
                f"{path} lacks the column(s) {', '.join(missing)}",
                f"an INSECT metadata file has the columns {', '.join(COLUMNS)}",
            )
        where = {name: header.index(name) for name in COLUMNS}
        columns: dict[str, list] = {name: [] for name in COLUMNS}
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(path, f"{path}, line {line}: {len(row)} fields, the header has {len(header)}")
            for name in TEXT_COLUMNS:
                columns[name].append(row[where[name]])
            for name in SPLITS:
                columns[name].append(_flag(row[where[name]], path, line, name))
    labels = []
    for line, value in enumerate(columns["labels"], start=2):
        try:
            labels.append(int(float(value)))
        except ValueError:
            raise DataError(path, f"{path}, line {line}: label {value!r} is not an integer") from None
    if not labels:
        raise DataError(path, f"{path} has a header but no rows")
    labels_arr = np.asarray(labels, dtype=np.int64)
    if labels_arr.min() < 0:
        raise DataError(
            path,
            f"{path}: labels must be 0-based class ids, found {int(labels_arr.min())}",
            "the processed release's labels are the .mat labels minus one",
        )
    return InsectTable(
        bold_ids=columns["bold_ids"],
        ids=columns["ids"],
        labels=labels_arr,
        species=columns["species"],
        nucleotides=columns["nucleotides"],
        **{name: np.asarray(columns[name], dtype=bool) for name in SPLITS},
    )


def write_insect_metadata(table: InsectTable, path: str | Path) -> Path:
    """Write `table` as `INSECT_metadata.csv` (header, no index column, 0/1 flags), atomically."""
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(COLUMNS)
            flags = np.stack([getattr(table, name) for name in SPLITS], axis=1).astype(int)
            for i in range(len(table)):
                writer.writerow(
                    [table.bold_ids[i], table.ids[i], int(table.labels[i]), table.species[i], table.nucleotides[i]]
                    + flags[i].tolist()
                )
    return Path(path)
