"""The INSECT dataset, raw or processed, written in the training HDF5 layout (the engine of `build-hdf5 insect`).

Input, found under a root folder (:func:`find_insect_source`):

- the raw BZSL release: ``res101.mat`` + ``att_splits.mat`` + ``images/<species>/<id>.jpg|.JPG``
  (:mod:`.insect_raw`);
- or the processed release: ``INSECT_metadata.csv`` + ``INSECT_images.hdf5`` (group ``images``, one 1-D uint8
  dataset per image, named by its id, holding the original JPEG bytes).

Output groups (:data:`GROUPS_INSECT`), each in res101 row order: ``train`` (train_loc), ``val`` (val_loc:
the unseen validation classes), ``trainval``, ``test_seen``, ``test_unseen``, and ``all_keys`` (train + val +
test_seen + test_unseen: the keys of the retrieval evaluation). Every group holds the usual columns
(``image``/``image_mask`` with the JPEG bytes unchanged, ``barcode`` = the raw COI ``nucleotides``,
``order``/``family``/``genus``/``species`` from the packaged taxonomy table, ``processid`` = ``ids``, plus
``bold_id``) and, for the BZSL export, ``insect_row`` (the 0-based res101 row), ``insect_label`` (the 0-based
class id) and ``insect_splits`` (uint8 [N, 5] flags, columns in the ``columns`` attribute). The file's
``insect_classes`` attribute is the number of classes. With a tokenizer, the taxonomy text
``"order family genus species"`` is stored tokenised to a fixed length (padding to that length; each row's
own tokens).

Bad inputs are logged in a :class:`~bioclip_cli.data.build_raw.ProblemLog`, as the BIOSCAN builds do: a
missing or corrupt image drops the row from every group; an unknown species (not in the table), an empty
barcode or one with characters outside ACGTN keeps the row.

The dataset is small (21,212 rows), so one process reads the images, a block of rows at a time, each image
once for all the groups that hold it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bioclip_cli.data.hdf5_writer import BioscanH5Writer
from bioclip_cli.data.insect_raw import ATT_SPLITS, RES101, raw_image_path, read_raw_insect
from bioclip_cli.data.insect_table import SPLITS, InsectTable, read_insect_metadata
from bioclip_cli.data.insect_taxonomy import taxonomy_columns
from bioclip_cli.data.raw_images import check_jpeg, read_images
from bioclip_cli.data.raw_problems import ProblemLog, barcode_problems
from bioclip_cli.data.taxonomy import LEVELS, NOT_CLASSIFIED, taxonomy_strings, tokenize_taxonomy
from bioclip_cli.errors import DataError

GROUPS_INSECT: dict[str, tuple[str, ...]] = {  # group -> the INSECT splits whose rows it holds
    "train": ("train",),
    "val": ("val",),
    "trainval": ("trainval",),
    "test_seen": ("test_seen",),
    "test_unseen": ("test_unseen",),
    "all_keys": ("train", "val", "test_seen", "test_unseen"),
}
PROCESSED_CSV = "INSECT_metadata.csv"
PROCESSED_H5 = "INSECT_images.hdf5"
SEARCHED = (".", "data/INSECT", "INSECT")  # where under the root the release is looked for, in order
ROW_DATASET = "insect_row"
LABEL_DATASET = "insect_label"
SPLITS_DATASET = "insect_splits"
CLASSES_ATTR = "insect_classes"
STRING_COLUMNS: tuple[str, ...] = ("barcode", *LEVELS, "processid", "bold_id")
BLOCK_ROWS = 256  # rows whose images are read at once


@dataclass
class InsectSource:
    """Where the release is: `kind` raw or processed, the folder holding it, its row table."""

    kind: str
    folder: Path
    table: InsectTable

    def describe(self) -> str:
        files = f"{RES101} + {ATT_SPLITS} + images/" if self.kind == "raw" else f"{PROCESSED_CSV} + {PROCESSED_H5}"
        return f"the {self.kind} INSECT release in {self.folder} ({files})"

    def image_reader(self, decode: bool) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, list]]:
        """A function of row indices -> ``(data, ends, problems)`` as :func:`~.build_raw.read_images`."""
        table = self.table
        if self.kind == "raw":
            images = self.folder / "images"
            buffer: list[np.ndarray | None] = [None]  # reused from block to block (the writer copies the bytes)

            def read_raw(rows: np.ndarray):
                paths = [str(raw_image_path(images, table.species[i], table.ids[i])) for i in rows.tolist()]
                data, ends, problems = read_images(paths, decode, None, out=buffer[0])
                buffer[0] = data.base if data.base is not None else data
                return data, ends, problems

            return read_raw
        return _ProcessedImages(self.folder / PROCESSED_H5, table.ids, decode)


class _ProcessedImages:
    """Reads images from `INSECT_images.hdf5` (group ``images``, a dataset per id) like read_images reads files."""

    def __init__(self, path: Path, ids: list[str], decode: bool):
        import h5py

        try:
            self.file = h5py.File(path, "r")
        except OSError as exc:
            raise DataError(path, f"{path} is not a readable HDF5 file ({exc})") from None
        if "images" not in self.file:
            self.file.close()
            raise DataError(path, f"{path} has no group 'images'", "it should be the processed INSECT release's file")
        self.path, self.ids, self.decode = path, ids, decode
        self.images = self.file["images"]

    def __call__(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
        parts, ends, problems, pos = [], np.empty(len(rows), dtype=np.int64), [], 0
        for k, i in enumerate(rows.tolist()):
            name = self.ids[i]
            where = f"{self.path}:images/{name}"
            data = None
            if not name or name not in self.images:
                problems.append((k, "missing_image", where))
            else:
                data = np.asarray(self.images[name][()], dtype=np.uint8).reshape(-1)
                problem = check_jpeg(data, decode=self.decode)
                if problem is not None:
                    problems.append((k, "bad_image", f"{problem}: {where}"))
                    data = None
            if data is not None:
                parts.append(data)
                pos += len(data)
            ends[k] = pos
        data = np.concatenate(parts) if parts else np.empty(0, dtype=np.uint8)
        return data, ends, problems

    def close(self) -> None:
        self.file.close()


def find_insect_source(root: str | Path) -> InsectSource:
    """The INSECT release under `root` (itself, ``data/INSECT`` or ``INSECT``): raw if its .mat files are found
    (first), else the processed pair. DataError naming the places searched when neither is there."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, f"{root} is not a folder", "give --root the folder holding the INSECT release")
    for rel in SEARCHED:
        folder = root / rel
        if (folder / RES101).is_file() or (folder / ATT_SPLITS).is_file():
            return InsectSource("raw", folder, read_raw_insect(folder))
        if (folder / PROCESSED_CSV).is_file():
            if not (folder / PROCESSED_H5).is_file():
                raise DataError(
                    folder / PROCESSED_H5,
                    f"{folder / PROCESSED_CSV} is there but not {PROCESSED_H5} beside it",
                    f"bioclip download insect --root {root}",
                )
            return InsectSource("processed", folder, read_insect_metadata(folder / PROCESSED_CSV))
    places = ", ".join(str(root / rel) for rel in SEARCHED)
    raise DataError(
        root,
        f"no INSECT release under {root}: neither {RES101} + {ATT_SPLITS} nor {PROCESSED_CSV} + {PROCESSED_H5} "
        f"in {places}",
        f"bioclip download insect --root {root}",
    )


@dataclass
class InsectWriteResult:
    """What :func:`write_insect_groups` stored: rows per group, the rows kept (res101 indices), rank gaps."""

    groups: dict[str, int] = field(default_factory=dict)
    kept: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    not_selected: int = 0  # rows of no split (stored nowhere)
    image_bytes: int = 0
    missing_ranks: dict[str, int] = field(default_factory=dict)


def group_masks(table: InsectTable) -> dict[str, np.ndarray]:
    """group -> bool [N]: the rows of its splits."""
    return {g: np.logical_or.reduce([getattr(table, s) for s in splits]) for g, splits in GROUPS_INSECT.items()}


def _log_row_issues(
    table: InsectTable, taxonomy: dict, known: np.ndarray, rows: np.ndarray, log: ProblemLog
) -> dict[str, int]:
    """Log the unknown species and barcode issues of the stored `rows`; the stored rows per rank that is
    ``not_classified``."""
    for i in rows[~known[rows]].tolist():
        log.add("unknown_species", table.ids[i], "kept, order/family/genus stored as not_classified", table.species[i])
    for k, kind, detail in barcode_problems([table.nucleotides[i].encode("utf-8") for i in rows.tolist()]):
        log.add(kind, table.ids[rows[k]], "kept", detail)
    return {lv: int(n) for lv in LEVELS if (n := np.count_nonzero(taxonomy[lv][rows] == NOT_CLASSIFIED))}


def _good_rows(problems: list, n: int, ids: list[str], log: ProblemLog, on_bad_image: str) -> np.ndarray:
    """Log a block's image problems (or fail at the first); the mask of its good rows."""
    good = np.ones(n, dtype=bool)
    for k, kind, detail in problems:
        if on_bad_image == "fail":
            raise DataError(detail.rsplit(": ", 1)[-1], f"bad input for {ids[k]}: {kind.replace('_', ' ')} ({detail})")
        log.add(kind, ids[k], "skipped", detail)
        good[k] = False
    return good


def write_insect_groups(
    source: InsectSource,
    writer: BioscanH5Writer,
    log: ProblemLog,
    *,
    tokenizer=None,
    text_max_len: int = 20,
    decode: bool = False,
    on_bad_image: str = "skip",
    progress=None,
) -> InsectWriteResult:
    """Write :data:`GROUPS_INSECT` of `source` into `writer` (not closed here); `progress(rows)` as rows are read."""
    table = source.table
    n = len(table)
    taxonomy, known = taxonomy_columns(table.species)
    result = InsectWriteResult()
    masks = group_masks(table)
    selected = np.logical_or.reduce(list(masks.values()))
    result.not_selected = int(n - np.count_nonzero(selected))
    columns = {
        "barcode": np.asarray(table.nucleotides, dtype=object),
        **taxonomy,
        "processid": np.asarray(table.ids, dtype=object),
        "bold_id": np.asarray(table.bold_ids, dtype=object),
    }
    tokens, token_len = None, text_max_len if tokenizer is not None else None
    if tokenizer is not None:
        text = taxonomy_strings(*(taxonomy[lv] for lv in LEVELS))
        tokens = tokenize_taxonomy(tokenizer, text, text_max_len)
    flags = np.stack([getattr(table, s) for s in SPLITS], axis=1).astype(np.uint8)
    stored: dict[str, list[np.ndarray]] = {g: [] for g in GROUPS_INSECT}
    kept: list[np.ndarray] = []
    read = source.image_reader(decode)
    try:
        for lo in range(0, n, BLOCK_ROWS):
            rows = lo + np.flatnonzero(selected[lo : lo + BLOCK_ROWS])
            if len(rows):
                data, ends, problems = read(rows)
                good = _good_rows(problems, len(rows), [table.ids[i] for i in rows.tolist()], log, on_bad_image)
                starts = np.concatenate([[0], ends[:-1]])
                result.image_bytes += int((ends - starts)[good].sum())
                kept.append(rows[good])
                for group, mask in masks.items():
                    pick = np.flatnonzero(good & mask[rows])
                    if len(pick):
                        idx = rows[pick]
                        out = writer.group(group)  # created by its first rows: their longest image sets the chunk width
                        out.create(STRING_COLUMNS, image_width=int((ends - starts)[pick].max()), token_len=token_len,
                                   rows_hint=int(np.count_nonzero(mask)))  # fmt: skip
                        out.append_images(data, starts[pick], ends[pick])
                        out.append_rows({name: col[idx] for name, col in columns.items()},
                                        {k: v[idx] for k, v in tokens.items()} if tokens is not None else None)  # fmt: skip
                        stored[group].append(idx)
            if progress is not None:
                progress(min(BLOCK_ROWS, n - lo))
    finally:
        if isinstance(read, _ProcessedImages):
            read.close()
    for group in GROUPS_INSECT:
        out = writer.group(group)
        out.create(STRING_COLUMNS, token_len=token_len, rows_hint=0)
        idx = np.concatenate(stored[group]) if stored[group] else np.empty(0, dtype=np.int64)
        out.group.create_dataset(ROW_DATASET, data=idx.astype(np.int64))
        out.group.create_dataset(LABEL_DATASET, data=table.labels[idx])
        split_flags = out.group.create_dataset(SPLITS_DATASET, data=flags[idx].reshape(len(idx), len(SPLITS)))
        split_flags.attrs["columns"] = ",".join(SPLITS)
        result.groups[group] = len(idx)
    writer.file.attrs[CLASSES_ATTR] = table.n_classes
    result.kept = np.concatenate(kept) if kept else np.empty(0, dtype=np.int64)
    result.missing_ranks = _log_row_issues(table, taxonomy, known, result.kept, log)
    return result


def table_rows(table: InsectTable, rows: np.ndarray) -> InsectTable:
    """The given rows of `table` (in the order given), labels and flags kept."""
    rows = np.asarray(rows, dtype=np.int64)
    pick = rows.tolist()
    return InsectTable(
        bold_ids=[table.bold_ids[i] for i in pick],
        ids=[table.ids[i] for i in pick],
        labels=table.labels[rows],
        species=[table.species[i] for i in pick],
        nucleotides=[table.nucleotides[i] for i in pick],
        **{s: getattr(table, s)[rows] for s in SPLITS},
    )
