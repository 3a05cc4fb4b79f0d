"""The raw BIOSCAN releases, read as a stream of column-wise batches for `build-hdf5` (SPEC §4).

- 5M (the layout of the `bioscan-dataset` package): ``R/bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv``
  and ``R/bioscan5m/images/{package}/{split}/{chunk}/{processid}.jpg`` (no chunk folder for the evaluation
  splits). Groups come from the ``split`` column (:data:`GROUPS_5M`).
- 1M: the metadata TSV ``BIOSCAN_Insect_Dataset_metadata.tsv``, images ``{package}/part{chunk_number}/{image_file}``
  and the published partition: one ``{group}.txt`` file per group listing sampleids, one per line.
  (SPEC and ../shared/realdata confirm the file name, the group names, ``uri`` as the BIN and ``image_file`` as
  ``<id>.jpg``; the ``nucraw`` and ``chunk_number`` columns, the ``part{N}`` folders and the partition file
  format are not confirmed by them.)

The metadata is read in blocks of about 1 MB: a block of plain lines is cut into cells with one ``str.split``
and handled column by column (:meth:`Table.column_blocks`); :meth:`Table.widest` scans the file once first, with
numpy over the raw bytes, for the widest value of each column (the file stores fixed-width strings). Also the
checks (image bytes, barcode characters, missing ranks), :class:`ImageReader` and :class:`ProblemLog`, which
counts and lists every bad input so nothing is dropped silently.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from pathlib import Path

import numpy as np

from bioclip_cli.data.taxonomy import LEVELS, NOT_CLASSIFIED, clean_rank
from bioclip_cli.errors import DataError

SPLITS_5M: tuple[str, ...] = (
    "pretrain",
    "train",
    "val",
    "test",
    "key_unseen",
    "val_unseen",
    "test_unseen",
    "other_heldout",
)
GROUPS_5M: dict[str, tuple[str, ...]] = {  # group -> metadata splits (SPEC §4, 5M mapping)
    "no_split_and_seen_train": ("pretrain", "train"),
    "seen_keys": ("train",),
    "unseen_keys": ("key_unseen",),
    "all_keys": ("key_unseen", "train"),
    "val_seen": ("val",),
    "test_seen": ("test",),
    "val_unseen": ("val_unseen",),
    "test_unseen": ("test_unseen",),
    "other_heldout": ("other_heldout",),
}
GROUPS_1M: tuple[str, ...] = (
    "no_split",
    "train_seen",
    "no_split_and_seen_train",
    "seen_keys",
    "val_seen",
    "test_seen",
    "val_unseen",
    "test_unseen",
    "val_unseen_keys",
    "test_unseen_keys",
    "single_species",
    "all_keys",
)
METADATA_5M = Path("bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv")
METADATA_1M_NAME = "BIOSCAN_Insect_Dataset_metadata.tsv"
IMAGE_PACKAGES = ("cropped_256", "original_256", "cropped", "original_full")
REQUIRED_5M = ("processid", "sampleid", "split", "dna_barcode", *LEVELS)
REQUIRED_1M = ("sampleid", "image_file", "chunk_number", *LEVELS)
# the metadata columns a batch is made of, in the order Release5M.batches / Release1M.batches unpack them
_COLUMNS_5M = ("processid", "split", "chunk", "dna_barcode", *LEVELS, "sampleid", "dna_bin")
_COLUMNS_1M = ("sampleid", "image_file", "chunk_number", *LEVELS, "nucraw", "dna_barcode", "uri", "dna_bin")
_ACGTN_REMOVED = str.maketrans("", "", "ACGTN")
_READ_SIZE = 1 << 16  # first read() of a file: any 256-px JPEG in one call, and under malloc's mmap threshold
_BLOCK_CHARS = 1 << 20  # metadata characters parsed per block
# bytes at the end of a file searched for the end-of-image marker: cameras append data after it (every BIOSCAN-1M
# original photograph ends with a 2,148-byte trailer); the marker cannot occur in the compressed data itself
_EOI_WINDOW = 1 << 16
STRINGS_5M: tuple[str, ...] = ("barcode", *LEVELS, "sampleid", "image_file", "processid", "dna_bin")
STRINGS_1M: tuple[str, ...] = ("barcode", *LEVELS, "sampleid", "image_file", "dna_bin")


@dataclass(slots=True)
class RawBatch:
    """One block of metadata rows, column-wise: the rows selected for the file and the groups they go to.

    ``columns`` follow the release's string columns (:data:`STRINGS_5M` / :data:`STRINGS_1M`); ``groups`` maps each
    group to the (ascending) indices of its rows in this batch.
    """

    rows_read: int  # metadata rows this batch consumed (selected or not)
    not_selected: int  # valid rows of splits/groups left out
    ids: list[str]  # processid (5M) or image_file (1M): the id listed in the report
    paths: list[str]  # image file of each row
    columns: list[list[str]]
    groups: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows: np.ndarray) -> RawBatch:
        """The batch restricted to `rows` (ascending indices), its groups renumbered."""
        n = len(self.ids)
        if len(rows) == n:
            return self
        take = rows_picker(rows, n)
        keep = np.zeros(n, dtype=bool)
        keep[rows] = True
        groups = {g: np.searchsorted(rows, idx[keep[idx]]) for g, idx in self.groups.items()}
        columns = [take(col) for col in self.columns]
        return RawBatch(self.rows_read, self.not_selected, take(self.ids), take(self.paths), columns, groups)


def groups_for_splits(splits: list[str] | None) -> dict[str, tuple[str, ...]]:
    """The 5M groups whose source splits are all selected (every group when `splits` is None)."""
    if splits is None:
        return dict(GROUPS_5M)
    unknown = sorted(set(splits) - set(SPLITS_5M))
    if unknown:
        raise DataError(
            METADATA_5M,
            f"unknown split(s) {', '.join(unknown)}; the BIOSCAN-5M splits are: {', '.join(SPLITS_5M)}",
            "e.g. --splits val,val_unseen,key_unseen,train",
        )
    return {g: s for g, s in GROUPS_5M.items() if set(s) <= set(splits)}


class Release5M:
    """The raw BIOSCAN-5M release under `root`."""

    strings = STRINGS_5M

    def __init__(self, root: str | Path, image_package: str = "cropped_256"):
        self.root = Path(root)
        self.metadata = self.root / METADATA_5M
        self.images = self.root / "bioscan5m" / "images" / image_package
        if not self.metadata.is_file():
            raise DataError(
                self.metadata,
                f"no BIOSCAN-5M metadata at {self.metadata}",
                f"download it with `bioclip download 5m --what raw --root {self.root}`",
            )
        if not self.images.is_dir():
            have = sorted(p.name for p in self.images.parent.iterdir()) if self.images.parent.is_dir() else []
            raise DataError(
                self.images,
                f"no image package {image_package!r} at {self.images}; found: {', '.join(have) or 'nothing'}",
                "pass --image-package with one of the packages found, or download the images",
            )

    def table(self) -> Table:
        """The metadata, streamed (header checked first)."""
        return Table(self.metadata, ",", REQUIRED_5M)

    def scan(self, progress=None) -> tuple[int, dict[str, int]]:
        """One pass over the metadata: its rows and the widest value of each string column (UTF-8 bytes), so
        that the file can store fixed-width strings. `progress(nbytes)` is called per block."""
        names = ("dna_barcode", *LEVELS, "sampleid", "processid", "dna_bin")
        rows, widest = self.table().widest(names, progress)
        widths = dict(zip(("barcode", *LEVELS, "sampleid", "processid", "dna_bin"), widest))
        widths["image_file"] = widths["processid"] + len(".jpg")
        return rows, _rank_widths(widths)

    def batches(self, groups: dict[str, tuple[str, ...]], log: ProblemLog) -> Iterator[RawBatch]:
        """The metadata as :class:`RawBatch` es for `groups` (group -> source splits), block by block.

        Per block and column-wise: a row without processid is skipped, a repeated processid keeps its first row, a
        split outside :data:`SPLITS_5M` puts the row in no group (each logged); rows of splits no group takes are
        counted as not selected.
        """
        code_of = {split: i for i, split in enumerate(SPLITS_5M)}
        unknown_code = len(SPLITS_5M)
        group_codes = {g: np.array([code_of[s] for s in sources]) for g, sources in groups.items()}
        selected = np.zeros(unknown_code + 1, dtype=bool)
        for codes in group_codes.values():
            selected[codes] = True
        seen: set[str] = set()
        before = 0  # rows before this block
        for n, cols in self.table().column_blocks(_COLUMNS_5M):
            pid, split, chunk, barcode, order, family, genus, species, sampleid, dna_bin = cols
            pid, split = _stripped(pid), _stripped(split)
            keep = _first_occurrences(pid, seen, log, "duplicate_processid", missing_at=before + 2)
            code = np.fromiter(map(code_of.get, split, repeat(unknown_code)), dtype=np.int64, count=n)
            unknown = keep & (code == unknown_code)
            for i in np.flatnonzero(unknown).tolist():
                log.add("unknown_split", pid[i], "in no group", f"split={split[i]!r}")
            keep &= ~unknown
            chosen = keep & selected[code]
            rows = np.flatnonzero(chosen)
            take = rows_picker(rows, n)
            pid, split, chunk = take(pid), take(split), _stripped(take(chunk))
            columns = [
                _stripped(take(barcode)),
                *(_ranks(take(col)) for col in (order, family, genus, species)),
                _stripped(take(sampleid)),
                list(map(str.__add__, pid, repeat(".jpg"))),
                pid,
                _stripped(take(dna_bin)),
            ]
            base = str(self.images)
            paths = [f"{base}/{s}/{c}/{p}.jpg" if c else f"{base}/{s}/{p}.jpg" for s, c, p in zip(split, chunk, pid)]
            code = code[rows]
            members = {g: np.flatnonzero(np.isin(code, codes)) for g, codes in group_codes.items()}
            yield RawBatch(n, int(keep.sum()) - len(rows), pid, paths, columns, members)
            before += n


class Release1M:
    """The raw BIOSCAN-1M release: metadata TSV, `part{N}` image folders and the partition files."""

    strings = STRINGS_1M

    def __init__(self, root: str | Path, partition: str | Path | None = None, image_package: str = "cropped_256"):
        self.root = Path(root)
        self.metadata = _first_file(
            [
                self.root / "bioscan1m" / METADATA_1M_NAME,
                self.root / METADATA_1M_NAME,
                self.root / "metadata" / METADATA_1M_NAME,
            ]
        )
        candidates = [self.root / "bioscan1m" / "images" / image_package, self.root / "images" / image_package]
        candidates.append(self.root / image_package)
        self.images = next((c for c in candidates if c.is_dir()), None)
        if self.images is None:
            raise DataError(
                candidates[0],
                f"no image package {image_package!r} under {self.root} (looked in {', '.join(map(str, candidates))})",
                "pass --image-package, or unzip cropped_256.zip there",
            )
        part = [Path(partition)] if partition else [self.root / "bioscan1m" / "partition", self.root / "partition"]
        self.partition = next((p for p in part if p.is_dir()), None)
        if self.partition is None:
            raise DataError(
                part[0],
                f"no partition folder (one <group>.txt of sampleids per group) at {' or '.join(map(str, part))}",
                "pass --partition DIR",
            )

    def partition_groups(self, groups: list[str] | None) -> dict[str, list[str]]:
        """sampleid -> groups, from the `{group}.txt` files (only `groups` when given)."""
        files = {p.stem: p for p in sorted(self.partition.glob("*.txt"))}
        if not files:
            raise DataError(self.partition, f"{self.partition} holds no <group>.txt partition files")
        wanted = groups or list(files)
        missing = [g for g in wanted if g not in files]
        if missing:
            raise DataError(
                self.partition,
                f"no partition file for group(s) {', '.join(missing)} in {self.partition}; found: {', '.join(files)}",
            )
        membership: dict[str, list[str]] = {}
        for group in wanted:
            for line in files[group].read_text(encoding="utf-8").splitlines():
                sid = line.strip()
                if sid and sid != "sampleid":
                    membership.setdefault(sid, []).append(group)
        return membership

    def table(self) -> Table:
        return Table(self.metadata, "\t", REQUIRED_1M, any_of=("nucraw", "dna_barcode"))

    def scan(self, progress=None) -> tuple[int, dict[str, int]]:
        """See :meth:`Release5M.scan`."""
        rows, widest = self.table().widest(_COLUMNS_1M, progress)
        w = dict(zip(_COLUMNS_1M, widest))
        widths = {level: w[level] for level in LEVELS}
        widths.update(
            barcode=max(w["nucraw"], w["dna_barcode"]),
            sampleid=w["sampleid"],
            image_file=w["image_file"],
            dna_bin=max(w["uri"], w["dna_bin"]),
        )
        return rows, _rank_widths(widths)

    def batches(self, membership: dict[str, list[str]], group_names: list[str], log: ProblemLog) -> Iterator[RawBatch]:
        """The metadata as :class:`RawBatch` es, block by block: a row goes to the groups whose partition file lists
        its sampleid; a repeated image_file (or sampleid where it is empty) keeps its first row (logged)."""
        listed = {g: {sid for sid, gs in membership.items() if g in gs} for g in group_names}
        seen: set[str] = set()
        for n, cols in self.table().column_blocks(_COLUMNS_1M):
            sid, image_file, chunk_number, order, family, genus, species, nucraw, dna_barcode, uri, dna_bin = cols
            sid, image_file = _stripped(sid), _stripped(image_file)
            keys = [f or s for f, s in zip(image_file, sid)]
            keep = _first_occurrences(keys, seen, log, "duplicate_image_file")
            chosen = keep & np.fromiter(map(membership.__contains__, sid), dtype=bool, count=n)
            rows = np.flatnonzero(chosen)
            take = rows_picker(rows, n)
            image_file, sid = take(image_file), take(sid)
            barcode = [a or b for a, b in zip(take(nucraw), take(dna_barcode))]  # nucraw, else dna_barcode
            bins = [a or b for a, b in zip(take(uri), take(dna_bin))]
            columns = [
                _stripped(barcode),
                *(_ranks(take(col)) for col in (order, family, genus, species)),
                sid,
                image_file,
                _stripped(bins),
            ]
            base = str(self.images)
            paths = [f"{base}/part{c.strip()}/{f}" for c, f in zip(take(chunk_number), image_file)]
            members = {
                g: np.flatnonzero(np.fromiter(map(ids.__contains__, sid), bool, len(sid))) for g, ids in listed.items()
            }
            yield RawBatch(n, int(keep.sum()) - len(rows), image_file, paths, columns, members)


class Table:
    """A CSV/TSV read as a stream of rows or of column blocks; the header is checked on construction and
    ``columns`` maps each name to its index."""

    def __init__(self, path: Path, delimiter: str, required: tuple[str, ...], any_of: tuple[str, ...] = ()):
        self.path = path
        self.delimiter = delimiter
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh, delimiter=delimiter), [])
        missing = [c for c in required if c not in header]
        if any_of and not set(any_of) & set(header):
            missing.append(" or ".join(any_of))
        if missing:
            raise DataError(path, f"{path} lacks column(s) {', '.join(missing)}; it has: {', '.join(header)}")
        self.header = header
        self.columns = {name: i for i, name in reversed(list(enumerate(header)))}  # first one wins

    def __iter__(self) -> Iterator[list[str]]:
        """The rows after the header, as ``csv.reader`` gives them (a blank line is ``[]``)."""
        for block in self._blocks():
            yield from _split_lines(block, self.delimiter)

    def column_blocks(self, names: Sequence[str]) -> Iterator[tuple[int, list[list[str]]]]:
        """``(rows, columns)`` per block of rows: the cells of the columns `names` (a column the file lacks, or a
        cell a short row lacks, reads as ``""``), exactly what :meth:`__iter__` gives, column-wise.

        A block whose lines all have the header's width and hold no quote is cut into cells with one
        ``str.split`` for the whole block; any other block goes row by row."""
        idx = [self.columns.get(name) for name in names]
        for block in self._blocks():
            yield _block_columns(block, self.delimiter, len(self.header), idx)

    def widest(self, names: Sequence[str], progress=None) -> tuple[int, list[int]]:
        """The number of rows and, per column of `names`, the widest cell in UTF-8 bytes (0 for a column the
        file lacks). The cell lengths of a plain block (no quotes, every line as wide as the header) come from
        the positions of its separators (numpy, no str objects); other blocks are parsed. `progress(nbytes)` is
        called after each block."""
        idx = [self.columns.get(name) for name in names]
        width = len(self.header)
        rows = 0
        widest = [0] * len(names)
        for block in self._blocks(binary=True):
            crs = block.count(b"\r") if b"\r" in block else 0  # (`in` is a fast scan, count is not)
            plain = b'"' not in block and b"\0" not in block and (not crs or crs == block.count(b"\r\n"))
            lengths = _cell_lengths(block, self.delimiter, width) if plain else None  # a bare CR ends a row
            if lengths is not None:
                n = len(lengths)
                top = lengths.max(axis=0).tolist() if n else [0] * width
                found = [top[i] if i is not None else 0 for i in idx]
            else:
                n, columns = _block_columns(block.decode("utf-8"), self.delimiter, width, idx)
                found = [_widest(cells) if cells else 0 for cells in columns]
            rows += n
            widest = [max(w, f) for w, f in zip(widest, found)]
            if progress is not None:
                progress(len(block))
        return rows, widest

    def _blocks(self, binary: bool = False) -> Iterator:
        """The text after the header in blocks of whole lines (each ending with a newline); bytes when `binary`
        (cut at the same lines: a newline byte is never inside a UTF-8 character).

        A block is extended until its quotes balance, so that no quoted field is cut."""
        newline, quote = (b"\n", b'"') if binary else ("\n", '"')
        with open(self.path, "rb") if binary else open(self.path, newline="", encoding="utf-8") as fh:
            fh.readline()  # the header (checked in __init__)
            tail = newline[:0]
            while True:
                block = fh.read(_BLOCK_CHARS)
                if not block:
                    break
                block = tail + block
                cut = block.rfind(newline) + 1
                if cut == 0:  # no line end yet: read on
                    tail = block
                    continue
                block, tail = block[:cut], block[cut:]
                if quote in block and block.count(quote) % 2:  # a quoted field runs on: read on
                    tail = block + tail
                    continue
                yield block
            if tail:
                yield tail if tail.endswith(newline) else tail + newline


def _block_columns(block: str, delimiter: str, width: int, idx: list[int | None]) -> tuple[int, list[list[str]]]:
    """The rows of a block of whole lines and its cells at `idx`, column-wise (see :meth:`Table.column_blocks`)."""
    crs = block.count("\r") if "\r" in block else 0
    if '"' not in block and "\0" not in block and (not crs or crs == block.count("\r\n")):
        if crs:
            block = block.replace("\r\n", "\n")
        lines = block.split("\n")
        lines.pop()  # after the last newline
        if set(map(str.count, lines, repeat(delimiter))) == {width - 1}:
            n = len(lines)
            cells = block[:-1].replace("\n", delimiter).split(delimiter)
            return n, [cells[i::width] if i is not None else [""] * n for i in idx]
        rows = [line.split(delimiter) if line else [] for line in lines]
    else:
        rows = list(_split_lines(block, delimiter))
    picked = [_pad(row, idx) for row in rows]
    return len(rows), [list(col) for col in zip(*picked)] if picked else [[] for _ in idx]


def _cell_lengths(block: bytes, delimiter: str, width: int) -> np.ndarray | None:
    """[rows, width] byte lengths of the cells of a block of whole lines, or None when a line is not `width`
    cells wide (then the block is parsed instead). A CR before the newline counts in the last cell."""
    data = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero((data == ord(delimiter)) | (data == ord("\n")))  # the end of every cell
    n = len(ends) // width
    newline = data[ends] == ord("\n")
    if len(ends) != n * width or np.count_nonzero(newline) != n or not newline[width - 1 :: width].all():
        return None
    starts = np.empty_like(ends)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    return (ends - starts).reshape(n, width)


_RANKS: dict[str, str] = {}  # raw rank cell -> clean_rank(cell): a few thousand distinct values repeat


def _ranks(cells: list[str]) -> list[str]:
    """:func:`clean_rank` of every cell (through a cache of the distinct values)."""
    out = list(map(_RANKS.get, cells))
    if None in out:
        for i, value in enumerate(out):
            if value is None:
                cell = cells[i]
                value = out[i] = clean_rank(cell)
                if len(_RANKS) < 1 << 20:
                    _RANKS[cell] = value
    return out


def _widest(cells: list[str]) -> int:
    """The longest cell in UTF-8 bytes."""
    longest = max(map(len, cells))
    if "".join(cells).isascii():
        return longest
    return max(len(c.encode("utf-8")) for c in cells)


def _rank_widths(widths: dict[str, int]) -> dict[str, int]:
    """Room for ``not_classified`` in the rank columns (missing ranks are written so)."""
    return {k: max(w, len(NOT_CLASSIFIED)) if k in LEVELS else w for k, w in widths.items()}


def _stripped(cells: list[str]) -> list[str]:
    return list(map(str.strip, cells))


def rows_picker(rows: np.ndarray, n: int) -> Callable[[list], list]:
    """A function that picks `rows` (indices) out of a list of length `n`, as a list (C-speed ``itemgetter``)."""
    if len(rows) == n and (n == 0 or (rows[0] == 0 and rows[-1] == n - 1)):  # all, in order
        return lambda cells: cells
    if len(rows) == 1:
        i = int(rows[0])
        return lambda cells: [cells[i]]
    if len(rows) == 0:
        return lambda cells: []
    pick = itemgetter(*rows.tolist())
    return lambda cells: list(pick(cells))


def _first_occurrences(
    ids: list[str], seen: set[str], log: ProblemLog, duplicate: str, missing_at: int | None = None
) -> np.ndarray:
    """Which rows to keep: not an id seen before (earlier in the file: logged as `duplicate`) and, when
    `missing_at` (the file line of the first row) is given, not an empty id (logged as ``missing_processid``).
    The kept ids join `seen`."""
    n = len(ids)
    fresh = set(ids)
    if len(fresh) == n and (missing_at is None or "" not in fresh) and seen.isdisjoint(fresh):
        seen |= fresh
        return np.ones(n, dtype=bool)
    keep = np.ones(n, dtype=bool)
    for i, key in enumerate(ids):
        if missing_at is not None and not key:
            log.add("missing_processid", f"line {missing_at + i}", "skipped")
            keep[i] = False
        elif key in seen:
            log.add(duplicate, key, "kept the first row")
            keep[i] = False
        else:
            seen.add(key)
    return keep


def _split_lines(block: str, delimiter: str) -> Iterator[list[str]]:
    """The rows of a block of whole lines (ending with a newline), as csv.reader parses them."""
    crs = block.count("\r")
    if '"' in block or "\0" in block or (crs and crs != block.count("\r\n")):  # quotes, NUL, a bare CR
        yield from csv.reader(io.StringIO(block, newline=""), delimiter=delimiter)
        return
    lines = block.split("\n")
    lines.pop()  # after the last newline
    crlf = crs > 0
    for line in lines:
        if crlf and line.endswith("\r"):
            line = line[:-1]
        yield line.split(delimiter) if line else []


def _pad(row: list[str], idx: list[int | None]) -> list[str]:
    """The cells at `idx` of a row (cells a short row lacks read as empty)."""
    return [row[i] if i is not None and i < len(row) else "" for i in idx]


def _first_file(candidates: list[Path]) -> Path:
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(
        candidates[0],
        f"no BIOSCAN-1M metadata ({METADATA_1M_NAME}) at {' or '.join(map(str, candidates))}",
        "download it with `bioclip download 1m --what metadata`",
    )


# ----------------------------------------------------------------------------------------- checks


def read_file(path: str) -> bytes:
    """A whole file's bytes with plain system calls (less per-file overhead than ``open().read()``).

    The first read asks for 64 KiB: a buffer of 1 MiB would be mapped and unmapped by malloc on every call
    (several times the cost of the read); larger files are read on at their size."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, _READ_SIZE)
        if len(data) < _READ_SIZE:
            return data
        parts = [data]
        size = max(os.fstat(fd).st_size - len(data) + 1, _READ_SIZE)  # + 1: find the end in one call
        while block := os.read(fd, size):
            parts.append(block)
        return b"".join(parts)
    finally:
        os.close(fd)


def check_jpeg(data: bytes, decode: bool = False) -> str | None:
    """What is wrong with these image bytes, or None. Cheap marker check; full decode when `decode`."""
    if not data:
        return "empty file"
    if data[:3] != b"\xff\xd8\xff":
        return "not a JPEG (no start-of-image marker)"
    if not data.endswith(b"\xff\xd9") and data.rfind(b"\xff\xd9", max(0, len(data) - _EOI_WINDOW)) < 0:
        return "truncated JPEG (no end-of-image marker)"
    if decode:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
        except Exception as exc:  # Pillow raises several types for broken data
            return f"corrupt JPEG ({type(exc).__name__}: {exc})"
    return None


def reencode_jpeg(data: bytes, quality: int) -> bytes:
    """Decode any image and write it again as an RGB JPEG of the given quality (the upstream generator did)."""
    from PIL import Image

    from bioclip_cli.data.images import to_rgb

    with Image.open(io.BytesIO(data)) as img:
        rgb = to_rgb(img)
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def read_images(paths: list[str], decode: bool, reencode_quality: int | None) -> tuple[list, list]:
    """Read and check image files: the bytes of each (None when bad) and the problems as ``(index, kind,
    detail)``: ``missing_image``, ``unreadable_image``, ``bad_image``. Re-encoded when `reencode_quality`."""
    datas: list = []
    problems = []
    for i, path in enumerate(paths):
        try:
            data = read_file(path)
        except FileNotFoundError:
            problems.append((i, "missing_image", path))
            datas.append(None)
            continue
        except OSError as exc:
            problems.append((i, "unreadable_image", f"{path}: {exc}"))
            datas.append(None)
            continue
        problem = check_jpeg(data, decode=decode or reencode_quality is not None)
        if problem is not None:
            problems.append((i, "bad_image", f"{problem}: {path}"))
            datas.append(None)
            continue
        if reencode_quality is not None:
            data = reencode_jpeg(data, reencode_quality)
        datas.append(data)
    return datas, problems


@dataclass(slots=True, eq=False)
class _ReadTask:
    paths: list[str]
    future: Future | None = None  # when handed to the threads
    result: tuple | None = None  # (bytes or None per file, problems)


class ImageReader:
    """Reads and checks lists of image files (:func:`read_images`), results in submission order; in a pool
    of threads while reading is slow, by the caller while it is fast.

    Files in the page cache read in some 10 us, all of it CPU work under Python's GIL: threads would only
    take turns with the caller (and cost more, in GIL hand-overs). Files on a disk or a network share take
    0.1-10 ms, mostly waiting, which threads overlap. So the reader times each task (seconds per file, a
    moving average) and hands new tasks to the threads only while that is above `slow_file`; a task no
    thread has started when its result is wanted is run by the caller (so is the first task)."""

    def __init__(self, workers: int, decode: bool, reencode_quality: int | None, slow_file: float = 100e-6):
        self.options = (decode, reencode_quality)
        self.slow_file = slow_file
        self.seconds_per_file = 0.0  # the first task is read by the caller, and measures the files
        self._pool = ThreadPoolExecutor(max(1, workers))

    def submit(self, paths: list[str]) -> _ReadTask:
        """Queue reading `paths`; pass the returned task to :meth:`result`."""
        task = _ReadTask(paths)
        if self.parallel and paths:
            task.future = self._pool.submit(self._timed, paths)
        return task

    def result(self, task: _ReadTask) -> tuple[list, list]:
        """``(bytes or None per file, problems)`` of a submitted task."""
        if task.future is None or task.future.cancel():
            return self._timed(task.paths)
        return task.future.result()

    @property
    def parallel(self) -> bool:
        """Whether new tasks go to the threads."""
        return self.seconds_per_file >= self.slow_file

    def _timed(self, paths: list[str]) -> tuple[list, list]:
        start = time.perf_counter()
        result = read_images(paths, *self.options)
        if paths:
            per_file = (time.perf_counter() - start) / len(paths)
            self.seconds_per_file = 0.5 * self.seconds_per_file + 0.5 * per_file
        return result

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ImageReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def barcode_problem(seq: str) -> str | None:
    if not seq:
        return "empty_barcode"
    if seq.translate(_ACGTN_REMOVED):
        return "barcode_chars"
    return None


def barcode_problems(barcodes: list[str]) -> list[tuple[int, str, str | None]]:
    """``(row, kind, detail)`` for every empty barcode or one with characters outside ACGTN (one pass over the
    joined column when all are clean)."""
    if "" not in barcodes:
        joined = "".join(barcodes)
        if joined.isascii() and not joined.encode("ascii").translate(None, b"ACGTN"):  # bytes: much faster
            return []
    out = []
    for i, seq in enumerate(barcodes):
        kind = barcode_problem(seq)
        if kind == "empty_barcode":
            out.append((i, kind, None))
        elif kind:
            odd = sorted(set(seq) - set("ACGTN"))
            out.append((i, kind, "characters " + "".join(odd[:20])))
    return out


def missing_rank_bits(ranks: Sequence[list[str]]) -> np.ndarray:
    """Per row, bit k set when rank k of `ranks` (order, family, genus, species columns) is ``not_classified``."""
    n = len(ranks[0]) if ranks else 0
    bits = np.zeros(n, dtype=np.int64)
    for k, column in enumerate(ranks):
        if NOT_CLASSIFIED in column:
            bits |= (np.asarray(column, dtype=object) == NOT_CLASSIFIED).astype(np.int64) << k
    return bits


@dataclass
class ProblemLog:
    """Counts and ids of every bad input, by kind. ID lists are capped (`max_ids`); counts never are."""

    max_ids: int = 10_000
    kinds: dict[str, dict] = field(default_factory=dict)

    def add(self, kind: str, record_id: str, action: str, detail: str | None = None) -> None:
        entry = self.kinds.setdefault(kind, {"count": 0, "action": action, "ids": [], "details": {}})
        entry["count"] += 1
        if len(entry["ids"]) < self.max_ids:
            entry["ids"].append(record_id)
            if detail:
                entry["details"][record_id] = detail

    def room(self, kind: str) -> int:
        """How many more ids of `kind` are listed (beyond that only counted)."""
        return self.max_ids - len(self.kinds[kind]["ids"]) if kind in self.kinds else self.max_ids

    def add_many(
        self, kind: str, record_ids: list[str], action: str, details: list[str] | None = None, count: int | None = None
    ) -> None:
        """:meth:`add` for several rows of one kind at once (in order); `count` when more rows than the ids
        given (the ids beyond :meth:`room` need not be given)."""
        count = len(record_ids) if count is None else count
        if not count:
            return
        entry = self.kinds.setdefault(kind, {"count": 0, "action": action, "ids": [], "details": {}})
        entry["count"] += count
        room = self.max_ids - len(entry["ids"])
        if room > 0:
            entry["ids"].extend(record_ids[:room])
            if details is not None:
                entry["details"].update((i, d) for i, d in zip(record_ids[:room], details[:room]) if d)

    def count(self, kind: str) -> int:
        return self.kinds.get(kind, {}).get("count", 0)

    def to_dict(self) -> dict:
        out = {}
        for kind, entry in sorted(self.kinds.items()):
            out[kind] = dict(entry, ids_truncated=entry["count"] > len(entry["ids"]))
            if not entry["details"]:
                out[kind].pop("details")
        return out

    def rows(self) -> list[dict]:
        return [
            {"problem": kind, "rows": e["count"], "action": e["action"], "first ids": ", ".join(e["ids"][:3])}
            for kind, e in sorted(self.kinds.items())
        ]
