"""The raw BIOSCAN releases, read as a stream of column-wise batches for `build-hdf5` (SPEC §4).

- 5M (the layout of the `bioscan-dataset` package): ``R/bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv``
  and ``R/bioscan5m/images/{package}/{split}/{chunk}/{processid}.jpg`` (no chunk folder for the evaluation
  splits). Groups come from the ``split`` column (:data:`GROUPS_5M`).
- 1M: the metadata TSV ``BIOSCAN_Insect_Dataset_metadata.tsv``, images ``{package}/part{chunk_number}/{image_file}``
  and the published partition: one ``{group}.txt`` file per group listing sampleids, one per line.
  (SPEC and ../shared/realdata confirm the file name, the group names, ``uri`` as the BIN and ``image_file`` as
  ``<id>.jpg``; the ``nucraw`` and ``chunk_number`` columns, the ``part{N}`` folders and the partition file
  format are not confirmed by them.)

The metadata is read in blocks of about 1 MB of bytes. :meth:`Table.widest` scans the file once first, with
numpy over the raw bytes, for the widest value of each column (the file stores fixed-width strings). Then each
block is parsed on its own (:class:`Parse5M`, :class:`Parse1M`: the wanted cells cut at separator positions
found by numpy, handled column by column as UTF-8 bytes, the string columns made fixed-width arrays) into a
:class:`ParsedBlock`; :func:`with_images` reads its rows' image files into one buffer per part (no bytes object
per file); the release's ``batches`` then does, in file order, what depends on the rows before (duplicates,
unknown splits, groups) and yields :class:`RawBatch` es. `build-hdf5` runs the parsing and the reading in
worker processes (:mod:`.worker_stream`), ahead of the process that writes the file. Also the checks (image
bytes, barcode characters, missing ranks), :class:`ImageReader` and :class:`ProblemLog`, which counts and lists
every bad input so nothing is dropped silently.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from pathlib import Path

import numpy as np

from bioclip_cli.data.dna import gap_count
from bioclip_cli.data.taxonomy import LEVELS, NOT_CLASSIFIED, clean_rank
from bioclip_cli.data.worker_stream import shared_buffer
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
_STR_ONLY_SPACE = (b"\x1c", b"\x1d", b"\x1e", b"\x1f")  # ASCII whitespace to str.strip, not to bytes.strip
_READ_SIZE = 1 << 16  # first read() of a file: any 256-px JPEG in one call, and under malloc's mmap threshold
_BLOCK_CHARS = 1 << 20  # metadata characters parsed per block
# bytes at the end of a file searched for the end-of-image marker: cameras append data after it (every BIOSCAN-1M
# original photograph ends with a 2,148-byte trailer); the marker cannot occur in the compressed data itself
_EOI_WINDOW = 1 << 16
_SPLIT_CODES = {split: i for i, split in enumerate(SPLITS_5M)}
_SPLIT_BYTE_CODES = {split.encode(): i for split, i in _SPLIT_CODES.items()}
STRINGS_5M: tuple[str, ...] = ("barcode", *LEVELS, "sampleid", "image_file", "processid", "dna_bin")
STRINGS_1M: tuple[str, ...] = ("barcode", *LEVELS, "sampleid", "image_file", "dna_bin")


@dataclass(slots=True)
class RawBatch:
    """Metadata rows selected for the file, column-wise, with their image files' bytes and the groups they go to.

    ``columns`` follow the release's string columns (:data:`STRINGS_5M` / :data:`STRINGS_1M`) as fixed-width
    UTF-8 byte arrays; ``groups`` maps each group to the (ascending) indices of its rows in this batch;
    ``barcode_issues`` lists ``(row, kind, detail)`` for each empty barcode or one with characters outside ACGTN
    and ``rank_bits`` has, per row, bit k set when rank k (order, family, genus, species) is missing; row i's
    image file is ``image_data[image_starts[i]:image_ends[i]]`` (empty where ``image_problems``, ``(row, kind,
    detail)``, says why; `image_data` may be a view of memory lent only until the next batch).
    """

    rows_read: int  # metadata rows this batch consumed (selected or not)
    not_selected: int  # valid rows of splits/groups left out
    ids: np.ndarray  # processid (5M) or image_file (1M), UTF-8 bytes: the id listed in the report (see `id`)
    paths: list[bytes]  # image file of each row (a file system path as bytes)
    columns: list[np.ndarray]
    groups: dict[str, np.ndarray]
    barcode_issues: list[tuple[int, str, str | None]]
    rank_bits: np.ndarray
    image_data: np.ndarray
    image_starts: np.ndarray
    image_ends: np.ndarray
    image_problems: list[tuple[int, str, str]]

    def __len__(self) -> int:
        return len(self.ids)

    def id(self, i: int) -> str:
        return self.ids[i].decode("utf-8")

    def subset(self, rows: np.ndarray) -> RawBatch:
        """The batch restricted to `rows` (ascending indices), its groups and issues renumbered."""
        n = len(self.ids)
        if len(rows) == n:
            return self
        take = rows_picker(rows, n)
        position = np.full(n, -1, dtype=np.int64)
        position[rows] = np.arange(len(rows))
        return RawBatch(
            self.rows_read,
            self.not_selected,
            self.ids[rows],
            take(self.paths),
            [col[rows] for col in self.columns],
            {g: position[idx][position[idx] >= 0] for g, idx in self.groups.items()},
            _renumbered(self.barcode_issues, position),
            self.rank_bits[rows],
            self.image_data,
            self.image_starts[rows],
            self.image_ends[rows],
            _renumbered(self.image_problems, position),
        )


def _renumbered(issues: list[tuple], position: np.ndarray) -> list[tuple]:
    """``(row, ...)`` issues of the rows kept, their rows renumbered by `position` (-1: dropped)."""
    return [(int(position[i]), *rest) for i, *rest in issues if position[i] >= 0]


@dataclass(slots=True)
class ParsedBlock:
    """What a worker makes of a block of metadata lines (:class:`Parse5M`, :class:`Parse1M`, then
    :func:`with_images`): everything that does not depend on the rows before it, as arrays (cheap to hand between
    processes: byte strings, the image files' bytes in one buffer). ``keys`` (every row) are the ids duplicates
    are found by; the other fields are for the candidate rows ``candidates`` (indices), as in :class:`RawBatch`.
    ``image_ends`` are the ends of each candidate's file bytes in ``image_bytes`` (none until read)."""

    rows: int
    keys: np.ndarray
    candidates: np.ndarray
    ids: np.ndarray
    paths: np.ndarray
    columns: list[np.ndarray]
    barcode_issues: list[tuple[int, str, str | None]]
    rank_bits: np.ndarray
    codes: np.ndarray | None = None  # 5M: split code of every row (len(SPLITS_5M) for an unknown split)
    odd_splits: dict[int, str] | None = None  # 5M: row -> split value, for the unknown ones
    sampleids: np.ndarray | None = None  # 1M: sampleid of every row
    image_bytes: np.ndarray | None = None  # uint8: the candidates' files, one after the other
    image_ends: np.ndarray | None = None
    image_problems: list[tuple[int, str, str]] = field(default_factory=list)

    def part(self, lo: int, hi: int) -> ParsedBlock:
        """The candidates ``lo:hi`` and the metadata rows from the first of them (the block's first row when
        `lo` is 0) to the next candidate (the block's end when `hi` is the last): consecutive parts cover the
        block's rows once each."""
        n_cand = len(self.candidates)
        start = 0 if lo == 0 else int(self.candidates[lo])
        stop = self.rows if hi >= n_cand else int(self.candidates[hi])
        position = np.full(n_cand, -1, dtype=np.int64)
        position[lo:hi] = np.arange(hi - lo)
        odd = None
        if self.odd_splits is not None:
            odd = {i - start: s for i, s in self.odd_splits.items() if start <= i < stop}
        return ParsedBlock(
            stop - start,
            self.keys[start:stop],
            self.candidates[lo:hi] - start,
            self.ids[lo:hi],
            self.paths[lo:hi],
            [col[lo:hi] for col in self.columns],
            _renumbered(self.barcode_issues, position),
            self.rank_bits[lo:hi],
            codes=None if self.codes is None else self.codes[start:stop],
            odd_splits=odd,
            sampleids=None if self.sampleids is None else self.sampleids[start:stop],
        )

    def batch(self, rows: np.ndarray, not_selected: int) -> RawBatch:
        """The :class:`RawBatch` of the candidate rows at positions `rows` (ascending), groups still empty. Only
        its ``image_data`` is this block's array (the rest is copied)."""
        n = len(self.candidates)
        position = np.full(n, -1, dtype=np.int64)
        position[rows] = np.arange(len(rows))
        if self.image_ends is None:  # (not read: every row without its image)
            ends = np.zeros(n, dtype=np.int64)
            data = np.zeros(0, dtype=np.uint8)
        else:
            ends, data = self.image_ends, self.image_bytes
        starts = ends - np.diff(ends, prepend=0)
        return RawBatch(
            self.rows,
            not_selected,
            self.ids[rows],
            rows_picker(rows, n)(self.paths.tolist()),
            [col[rows] for col in self.columns],  # (indexing with an array copies)
            {},
            _renumbered(self.barcode_issues, position),
            self.rank_bits[rows],
            data,
            starts[rows],
            ends[rows],
            _renumbered(self.image_problems, position),
        )


def _mean_size(paths: list) -> int:
    """The mean size of the files (those that exist) among `paths`."""
    sizes = []
    for path in paths:
        try:
            sizes.append(os.stat(path).st_size)
        except OSError:
            pass
    return sum(sizes) // len(sizes) if sizes else 1


def with_images(
    blocks: Iterable[ParsedBlock], reader: ImageReader, max_rows: int, max_bytes: int, ahead: int
) -> Iterator[ParsedBlock]:
    """Each block's candidates' image files read (and checked) by `reader`, in :meth:`ParsedBlock.part` s of at
    most `max_rows` rows and about `max_bytes` of files (fewer rows per part while files are large), up to
    `ahead` parts handed to the reader at a time. A block without candidates passes whole."""
    rows_per_part = None
    for block in blocks:
        paths = block.paths.tolist()
        if not paths:
            yield block
            continue
        if rows_per_part is None:  # the first files' sizes tell how many make a part
            rows_per_part = max(1, min(max_rows, max_bytes // max(1, _mean_size(paths[:max_rows]))))
        lo = 0
        pending: deque = deque()
        while lo < len(paths) or pending:
            while lo < len(paths) and len(pending) < ahead:
                hi = min(len(paths), lo + rows_per_part)
                pending.append((lo, hi, reader.submit(paths[lo:hi])))
                lo = hi
            first, last, task = pending.popleft()
            part = block.part(first, last)
            part.image_bytes, part.image_ends, part.image_problems = reader.result(task)
            yield part
            good = last - first - len(part.image_problems)
            if good:  # the next parts' rows: about `max_bytes` of files like these
                per_file = max(1, len(part.image_bytes) // good)
                rows_per_part = max(1, min(max_rows, max_bytes // per_file))


@dataclass(frozen=True, slots=True)
class _BlockSpec:
    """Where the cells of a block are: the file (for errors), delimiter, header width, column indices."""

    path: str
    delimiter: str
    width: int
    idx: tuple[int | None, ...]

    def cells(self, block: bytes) -> tuple[int, list[list[bytes]]]:
        """The rows of a block of whole lines and its cells at `idx`, column-wise, as UTF-8 bytes: exactly what
        the csv module reads (a column the file lacks, or a cell a short row lacks, is empty).

        A plain block (no quote, NUL or bare CR; every line as wide as the header) is cut at the positions of
        its separators (numpy), only the wanted cells made into objects; any other is parsed as text."""
        if not block.isascii():
            try:
                block.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    self.path,
                    f"{self.path} is not UTF-8 text ({exc.reason} in a block of {len(block):,} bytes)",
                    "save the metadata as UTF-8",
                ) from None
        crs = block.count(b"\r") if b"\r" in block else 0  # (`in` is a fast scan, count is not)
        if b'"' not in block and b"\0" not in block and (not crs or crs == block.count(b"\r\n")):
            cut = _plain_cells(block.replace(b"\r\n", b"\n") if crs else block, self.delimiter, self.width, self.idx)
            if cut is not None:
                return cut
        n, columns = _block_columns(block.decode("utf-8"), self.delimiter, self.width, list(self.idx))
        return n, [[cell.encode("utf-8") for cell in column] for column in columns]


@dataclass(frozen=True, slots=True)
class Parse5M:
    """Parses a block of the BIOSCAN-5M metadata in a worker: candidates are the rows of a `selected` split."""

    spec: _BlockSpec
    images: str
    selected: tuple[bool, ...]  # per split code

    def __call__(self, block: bytes) -> ParsedBlock:
        n, cols = self.spec.cells(block)
        pid, split, chunk, barcode, order, family, genus, species, sampleid, dna_bin = cols
        keys, split = _stripped(pid), _stripped(split)
        unknown = len(SPLITS_5M)
        codes = np.fromiter(map(_SPLIT_BYTE_CODES.get, split, repeat(unknown)), dtype=np.int8, count=n)
        odd = {i: split[i].decode("utf-8") for i in np.flatnonzero(codes == unknown).tolist()}
        candidates = np.flatnonzero(np.asarray(self.selected)[codes])
        take = rows_picker(candidates, n)
        pid, split, chunk, barcode = take(keys), take(split), _stripped(take(chunk)), _stripped(take(barcode))
        ranks = [_ranks(take(col)) for col in (order, family, genus, species)]
        strings = [barcode, *ranks, _stripped(take(sampleid)), [p + b".jpg" for p in pid], pid]
        strings.append(_stripped(take(dna_bin)))
        base = os.fsencode(self.images)
        paths = [
            b"%s/%s/%s/%s.jpg" % (base, s, c, p) if c else b"%s/%s/%s.jpg" % (base, s, p)
            for s, c, p in zip(split, chunk, pid)
        ]
        columns = [_bytes_column(col) for col in strings]
        return ParsedBlock(
            n,
            _bytes_column(keys),
            candidates,
            columns[-2],
            _bytes_column(paths),
            columns,
            barcode_problems(barcode),
            missing_rank_bits(ranks),
            codes=codes,
            odd_splits=odd,
        )


@dataclass(frozen=True, slots=True)
class Parse1M:
    """Parses a block of the BIOSCAN-1M metadata in a worker (every row is a candidate: the partition decides)."""

    spec: _BlockSpec
    images: str

    def __call__(self, block: bytes) -> ParsedBlock:
        n, cols = self.spec.cells(block)
        sid, image_file, chunk_number, order, family, genus, species, nucraw, dna_barcode, uri, dna_bin = cols
        sid, image_file = _stripped(sid), _stripped(image_file)
        keys = [f or s for f, s in zip(image_file, sid)]
        barcode = _stripped([a or b for a, b in zip(nucraw, dna_barcode)])  # nucraw, else dna_barcode
        bins = _stripped([a or b for a, b in zip(uri, dna_bin)])
        ranks = [_ranks(col) for col in (order, family, genus, species)]
        base = os.fsencode(self.images)
        paths = [b"%s/part%s/%s" % (base, c, f) for c, f in zip(_stripped(chunk_number), image_file)]
        columns = [_bytes_column(col) for col in (barcode, *ranks, sid, image_file, bins)]
        return ParsedBlock(
            n,
            _bytes_column(keys),
            np.arange(n),
            columns[-2],
            _bytes_column(paths),
            columns,
            barcode_problems(barcode),
            missing_rank_bits(ranks),
            sampleids=columns[-3],
        )


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

    def parsed_blocks(self, groups: dict[str, tuple[str, ...]]) -> Callable[[], Iterator[ParsedBlock]]:
        """What makes the metadata's :class:`ParsedBlock` s for `groups` (group -> source splits): block by
        block, independently (what a worker process runs, see :meth:`batches`)."""
        table = self.table()
        selected = np.logical_or.reduce([*_split_members(groups).values(), np.zeros(len(SPLITS_5M) + 1, bool)])
        parse = Parse5M(table.spec(_COLUMNS_5M), str(self.images), tuple(selected.tolist()))
        return lambda: map(parse, table.raw_blocks())

    def batches(
        self, groups: dict[str, tuple[str, ...]], log: ProblemLog, parsed: Iterable[ParsedBlock]
    ) -> Iterator[RawBatch]:
        """The metadata as :class:`RawBatch` es for `groups` (group -> source splits), block by block.

        `parsed`: the items of :meth:`parsed_blocks` with their images (:func:`with_images`). Here, in file
        order: a row
        without processid is skipped, a repeated processid keeps its first row, a split outside
        :data:`SPLITS_5M` puts the row in no group (each logged); rows of splits no group takes are counted as
        not selected.
        """
        unknown_code = len(SPLITS_5M)
        members = _split_members(groups)
        seen: set[bytes] = set()
        before = 0  # rows before this block
        for block in parsed:
            keys = block.keys.tolist()
            keep = _first_occurrences(keys, seen, log, "duplicate_processid", missing_at=before + 2)
            unknown = np.flatnonzero(keep & (block.codes == unknown_code))
            for i in unknown.tolist():
                log.add("unknown_split", keys[i].decode(), "in no group", f"split={block.odd_splits[i]!r}")
            keep[unknown] = False
            rows = np.flatnonzero(keep[block.candidates])
            batch = block.batch(rows, int(keep.sum()) - len(rows))
            code = block.codes[block.candidates[rows]]
            batch.groups = {g: np.flatnonzero(member[code]) for g, member in members.items()}
            yield batch
            before += block.rows


def _split_members(groups: dict[str, tuple[str, ...]]) -> dict[str, np.ndarray]:
    """Per group, which split codes (:data:`SPLITS_5M`, then the unknown split) it takes rows of."""
    members = {g: np.zeros(len(SPLITS_5M) + 1, dtype=bool) for g in groups}
    for g, sources in groups.items():
        members[g][[_SPLIT_CODES[s] for s in sources]] = True
    return members


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

    def parsed_blocks(self) -> Callable[[], Iterator[ParsedBlock]]:
        """What makes the metadata's :class:`ParsedBlock` s, block by block (see :meth:`Release5M.parsed_blocks`)."""
        table = self.table()
        parse = Parse1M(table.spec(_COLUMNS_1M), str(self.images))
        return lambda: map(parse, table.raw_blocks())

    def batches(
        self,
        membership: dict[str, list[str]],
        group_names: list[str],
        log: ProblemLog,
        parsed: Iterable[ParsedBlock],
    ) -> Iterator[RawBatch]:
        """The metadata as :class:`RawBatch` es, block by block (`parsed`: the items of :meth:`parsed_blocks`
        with their images, :func:`with_images`): a row goes to the groups whose partition file lists its sampleid; a repeated
        image_file (or sampleid where it is empty) keeps its first row (logged)."""
        listed = {g: {sid.encode() for sid, gs in membership.items() if g in gs} for g in group_names}
        member = {sid.encode() for sid in membership}
        seen: set[bytes] = set()
        for block in parsed:
            keep = _first_occurrences(block.keys.tolist(), seen, log, "duplicate_image_file")
            sid = block.sampleids.tolist()
            chosen = keep & np.fromiter(map(member.__contains__, sid), dtype=bool, count=block.rows)
            rows = np.flatnonzero(chosen)
            batch = block.batch(rows, int(keep.sum()) - len(rows))
            sid = rows_picker(rows, block.rows)(sid)
            batch.groups = {
                g: np.flatnonzero(np.fromiter(map(ids.__contains__, sid), bool, len(sid))) for g, ids in listed.items()
            }
            yield batch


class Table:
    """A CSV/TSV read as a stream of rows or of column blocks; the header is checked on construction and
    ``columns`` maps each name to its index."""

    def __init__(self, path: Path, delimiter: str, required: tuple[str, ...], any_of: tuple[str, ...] = ()):
        self.path = path
        self.delimiter = delimiter
        with open(path, "rb") as fh:
            first = fh.readline()
        try:
            header = next(csv.reader([first.decode("utf-8")], delimiter=delimiter), [])
        except UnicodeDecodeError as exc:
            raise DataError(path, f"{path} is not UTF-8 text ({exc.reason} in its header)") from None
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

    def spec(self, names: Sequence[str]) -> _BlockSpec:
        """Where the cells of the columns `names` are (a column the file lacks reads as ``""``)."""
        return _BlockSpec(str(self.path), self.delimiter, len(self.header), tuple(self.columns.get(n) for n in names))

    def raw_blocks(self) -> Iterator[bytes]:
        """The bytes after the header in blocks of whole lines (see :meth:`_blocks`)."""
        return self._blocks(binary=True)

    def column_blocks(self, names: Sequence[str]) -> Iterator[tuple[int, list[list[bytes]]]]:
        """``(rows, columns)`` per block of rows: the cells of the columns `names` as UTF-8 bytes (a column the
        file lacks, or a cell a short row lacks, is empty), exactly what :meth:`__iter__` gives, column-wise
        (what :class:`Parse5M` and :class:`Parse1M` parse; see :meth:`_BlockSpec.cells`)."""
        spec = self.spec(names)
        for block in self.raw_blocks():
            yield spec.cells(block)

    def widest(self, names: Sequence[str], progress=None) -> tuple[int, list[int]]:
        """The number of rows and, per column of `names`, the widest cell in UTF-8 bytes (0 for a column the
        file lacks). The cell lengths of a plain block (no quotes, every line as wide as the header) come from
        the positions of its separators (numpy, no str objects); other blocks are parsed. `progress(nbytes)` is
        called after each block."""
        rows = 0
        widest = [0] * len(names)
        for nbytes, n, found in map(_BlockWidths(self.spec(names)), self.raw_blocks()):
            rows += n
            widest = [max(w, f) for w, f in zip(widest, found)]
            if progress is not None:
                progress(nbytes)
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


@dataclass(frozen=True, slots=True)
class _BlockWidths:
    """``(bytes, rows, widest cell per column)`` of a block (see :meth:`Table.widest`)."""

    spec: _BlockSpec

    def __call__(self, block: bytes) -> tuple[int, int, list[int]]:
        crs = block.count(b"\r") if b"\r" in block else 0  # (`in` is a fast scan, count is not)
        plain = b'"' not in block and b"\0" not in block and (not crs or crs == block.count(b"\r\n"))
        lengths = _cell_lengths(block, self.spec.delimiter, self.spec.width) if plain else None  # bare CR: parse
        if lengths is not None:
            n = len(lengths)
            top = lengths.max(axis=0).tolist() if n else [0] * self.spec.width
            return len(block), n, [top[i] if i is not None else 0 for i in self.spec.idx]
        n, columns = self.spec.cells(block)
        return len(block), n, [max(map(len, cells), default=0) for cells in columns]


def _bytes_column(values: list[bytes]) -> np.ndarray:
    """A column of byte strings as a fixed-width array, as wide as the widest (at least 1)."""
    return np.fromiter(values, dtype=f"S{max(1, max(map(len, values), default=1))}", count=len(values))


def _plain_cells(block: bytes, delimiter: str, width: int, idx: tuple[int | None, ...]):
    """``(rows, cells at idx column-wise)`` of a block of whole lines with no quote, NUL or CR, or None when a
    line is not `width` cells wide. The cells are cut at the separator positions found by numpy."""
    ends = _cell_ends(block, delimiter, width)
    if ends is None:
        return None
    n = len(ends)
    line_starts = np.empty(n, dtype=ends.dtype)
    line_starts[:1] = 0
    line_starts[1:] = ends[:-1, -1] + 1
    cut = block.__getitem__
    columns = []
    for i in idx:
        if i is None:
            columns.append([b""] * n)
            continue
        starts = (ends[:, i - 1] + 1 if i else line_starts).tolist()
        columns.append(list(map(cut, map(slice, starts, ends[:, i].tolist()))))
    return n, columns


def _cell_ends(block: bytes, delimiter: str, width: int) -> np.ndarray | None:
    """[rows, width] positions of the separator or newline that ends each cell of a block of whole lines, or
    None when a line is not `width` cells wide."""
    data = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero((data == ord(delimiter)) | (data == ord("\n")))
    n = len(ends) // width
    newline = data[ends] == ord("\n")
    if len(ends) != n * width or np.count_nonzero(newline) != n or not newline[width - 1 :: width].all():
        return None
    return ends.reshape(n, width)


def _cell_lengths(block: bytes, delimiter: str, width: int) -> np.ndarray | None:
    """[rows, width] byte lengths of the cells of a block of whole lines, or None when a line is not `width`
    cells wide (then the block is parsed instead). A CR before the newline counts in the last cell."""
    ends = _cell_ends(block, delimiter, width)
    if ends is None:
        return None
    flat = ends.reshape(-1)
    starts = np.empty_like(flat)
    starts[:1] = 0
    starts[1:] = flat[:-1] + 1
    return (flat - starts).reshape(ends.shape)


_RANKS: dict[bytes, bytes] = {}  # raw rank cell -> clean_rank(cell): a few thousand distinct values repeat


def _ranks(cells: list[bytes]) -> list[bytes]:
    """:func:`clean_rank` of every cell (UTF-8 bytes; through a cache of the distinct values)."""
    out = list(map(_RANKS.get, cells))
    if None in out:
        for i, value in enumerate(out):
            if value is None:
                cell = cells[i]
                value = out[i] = clean_rank(cell).encode("utf-8")
                if len(_RANKS) < 1 << 20:
                    _RANKS[cell] = value
    return out


def _rank_widths(widths: dict[str, int]) -> dict[str, int]:
    """Room for ``not_classified`` in the rank columns (missing ranks are written so)."""
    return {k: max(w, len(NOT_CLASSIFIED)) if k in LEVELS else w for k, w in widths.items()}


def _stripped(cells: list[bytes]) -> list[bytes]:
    """Each UTF-8 cell with its leading and trailing whitespace removed, as ``str.strip`` removes it (bytes'
    strip where that is the same: ASCII without the information separators \\x1c-\\x1f)."""
    joined = b"".join(cells)
    if joined.isascii() and not any(space in joined for space in _STR_ONLY_SPACE):
        return list(map(bytes.strip, cells))
    return [cell.decode("utf-8").strip().encode("utf-8") for cell in cells]


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
    ids: list[bytes], seen: set[bytes], log: ProblemLog, duplicate: str, missing_at: int | None = None
) -> np.ndarray:
    """Which rows to keep: not an id (UTF-8 bytes) seen before (earlier in the file: logged as `duplicate`) and,
    when `missing_at` (the file line of the first row) is given, not an empty id (logged as
    ``missing_processid``). The kept ids join `seen`."""
    n = len(ids)
    fresh = set(ids)
    if len(fresh) == n and (missing_at is None or b"" not in fresh) and seen.isdisjoint(fresh):
        seen |= fresh
        return np.ones(n, dtype=bool)
    keep = np.ones(n, dtype=bool)
    for i, key in enumerate(ids):
        if missing_at is not None and not key:
            log.add("missing_processid", f"line {missing_at + i}", "skipped")
            keep[i] = False
        elif key in seen:
            log.add(duplicate, key.decode("utf-8"), "kept the first row")
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


def read_file_into(path: str | bytes, buf: np.ndarray, pos: int) -> tuple[np.ndarray, int]:
    """Read a whole file into the uint8 buffer `buf` at `pos`, with plain system calls (no intermediate bytes
    object); when it does not fit, into a new buffer twice as large (or more) holding `buf`'s first `pos` bytes.
    Returns the buffer and the file's length."""
    fd = os.open(path, os.O_RDONLY)
    try:
        n = os.readv(fd, [buf[pos:]]) if pos < len(buf) else 0
        while pos + n == len(buf):  # full: there may be more
            grown = np.empty(max(2 * len(buf), pos + n + _READ_SIZE), dtype=np.uint8)
            grown[: pos + n] = buf[: pos + n]
            buf = grown
            more = os.readv(fd, [buf[pos + n :]])
            if not more:
                break
            n += more
        return buf, n
    finally:
        os.close(fd)



def check_jpeg(data, decode: bool = False) -> str | None:
    """What is wrong with these image bytes (any bytes-like object), or None. Cheap marker check; full decode
    when `decode`."""
    data = memoryview(data).cast("B")
    if not len(data):
        return "empty file"
    if data[:3] != b"\xff\xd8\xff":
        return "not a JPEG (no start-of-image marker)"
    if data[-2:] != b"\xff\xd9" and bytes(data[-_EOI_WINDOW:]).rfind(b"\xff\xd9") < 0:
        return "truncated JPEG (no end-of-image marker)"
    from bioclip_cli.data.images import declared_size_problem, jpeg_size

    problem = declared_size_problem(jpeg_size(bytes(data)))  # the header only: no pixel is decoded
    if problem:
        return problem
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


def read_images(
    paths: list[str] | list[bytes], decode: bool, reencode_quality: int | None, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, list]:
    """Read and check image files (paths as str or file-system bytes) one after the other into one uint8 buffer
    (`out`, or a larger one when they do not fit): ``(data, ends, problems)``, file i being
    ``data[ends[i-1]:ends[i]]`` (empty when bad) and the problems ``(index, kind, detail)``: ``missing_image``,
    ``unreadable_image``, ``bad_image`` (details name the path as str). Re-encoded when `reencode_quality`."""
    buf = out if out is not None else np.empty(len(paths) * _READ_SIZE // 4 + _READ_SIZE, dtype=np.uint8)
    ends = np.empty(len(paths), dtype=np.int64)
    pos = 0
    problems = []
    for i, path in enumerate(paths):
        n = 0
        try:
            buf, n = read_file_into(path, buf, pos)
        except FileNotFoundError:
            problems.append((i, "missing_image", os.fsdecode(path)))
        except OSError as exc:
            problems.append((i, "unreadable_image", f"{os.fsdecode(path)}: {exc}"))
        else:
            problem = check_jpeg(buf[pos : pos + n], decode=decode or reencode_quality is not None)
            if problem is not None:
                problems.append((i, "bad_image", f"{problem}: {os.fsdecode(path)}"))
                n = 0
            elif reencode_quality is not None:
                data = reencode_jpeg(buf[pos : pos + n].tobytes(), reencode_quality)
                if pos + len(data) > len(buf):
                    grown = np.empty(2 * (pos + len(data)), dtype=np.uint8)
                    grown[:pos] = buf[:pos]
                    buf = grown
                n = len(data)
                buf[pos : pos + n] = np.frombuffer(data, dtype=np.uint8)
        pos += n
        ends[i] = pos
    return buf[:pos], ends, problems


@dataclass(slots=True, eq=False)
class _ReadTask:
    paths: list
    out: np.ndarray
    future: Future | None = None  # when handed to the threads
    result: tuple | None = None  # (data, ends, problems)


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
        self.bytes_per_file = 0.0
        self._pool = ThreadPoolExecutor(max(1, workers))

    def submit(self, paths: list) -> _ReadTask:
        """Queue reading `paths` (into a :func:`~bioclip_cli.data.worker_stream.shared_buffer` as large as such
        files have been so far); pass the returned task to :meth:`result`."""
        capacity = int(len(paths) * self.bytes_per_file * 1.25) if self.bytes_per_file else _READ_SIZE // 4 * len(paths)
        task = _ReadTask(paths, shared_buffer(capacity + _READ_SIZE))
        if self.parallel and paths:
            task.future = self._pool.submit(self._timed, paths, task.out)
        return task

    def result(self, task: _ReadTask) -> tuple[np.ndarray, np.ndarray, list]:
        """``(data, ends, problems)`` of a submitted task (see :func:`read_images`)."""
        if task.future is None or task.future.cancel():
            return self._timed(task.paths, task.out)
        return task.future.result()

    @property
    def parallel(self) -> bool:
        """Whether new tasks go to the threads."""
        return self.seconds_per_file >= self.slow_file

    def _timed(self, paths: list, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
        start = time.perf_counter()
        result = read_images(paths, *self.options, out=out)
        if paths:
            per_file = (time.perf_counter() - start) / len(paths)
            self.seconds_per_file = 0.5 * self.seconds_per_file + 0.5 * per_file
            self.bytes_per_file = 0.5 * self.bytes_per_file + 0.5 * len(result[0]) / len(paths)
        return result

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ImageReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def barcode_problems(barcodes: list[bytes]) -> list[tuple[int, str, str | None]]:
    """``(row, kind, detail)`` for every empty barcode (UTF-8 bytes) or one with characters outside ACGTN (one
    pass over the joined column when all are clean)."""
    if b"" not in barcodes and not b"".join(barcodes).translate(None, b"ACGTN"):
        return []
    out = []
    for i, seq in enumerate(barcodes):
        if not seq:
            out.append((i, "empty_barcode", None))
            continue
        gaps = gap_count(seq)  # alignment gaps: stored as given, removed when tokenised (data/dna.py)
        if gaps:
            out.append((i, "alignment_gaps", f"{gaps} gap character(s) '-'/'.', removed when tokenised"))
        odd = sorted(set(seq.decode("utf-8")) - set("ACGTN-."))
        if odd:
            out.append((i, "barcode_chars", "characters " + "".join(odd[:20])))
    return out


def missing_rank_bits(ranks: Sequence[list[bytes]]) -> np.ndarray:
    """Per row, bit k set when rank k of `ranks` (order, family, genus, species columns, UTF-8 bytes) is
    ``not_classified``."""
    n = len(ranks[0]) if ranks else 0
    missing = NOT_CLASSIFIED.encode()
    bits = np.zeros(n, dtype=np.int64)
    for k, column in enumerate(ranks):
        if missing in column:
            bits |= np.fromiter(map(missing.__eq__, column), dtype=bool, count=n).astype(np.int64) << k
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
