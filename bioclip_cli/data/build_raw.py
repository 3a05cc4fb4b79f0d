"""The raw BIOSCAN releases, read as a stream of column-wise batches for `build-hdf5` (docs/method.md, Data).

- 5M (the layout of the `bioscan-dataset` package): ``R/bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv``
  and ``R/bioscan5m/images/{package}/{split}/{chunk}/{processid}.jpg`` (no chunk folder for the evaluation
  splits). Groups come from the ``split`` column (:data:`GROUPS_5M`).
- 1M: the metadata TSV ``BIOSCAN_Insect_Dataset_metadata.tsv``, images ``{package}/part{chunk_number}/{image_file}``
  and the published partition: one ``{group}.txt`` file per group listing sampleids, one per line.
  (The published files confirm the file name, the group names, ``uri`` as the BIN and ``image_file`` as
  ``<id>.jpg``; the ``nucraw`` and ``chunk_number`` columns, the ``part{N}`` folders and the partition file
  format are not confirmed by them.)

The metadata is read in blocks of about 1 MB (:mod:`.raw_metadata`: the widest value of each column first,
then each block cut into column-wise cells with numpy). Each block is parsed on its own (:class:`Parse5M`,
:class:`Parse1M`: the wanted cells handled column by column as UTF-8 bytes, the string columns made
fixed-width arrays) into a :class:`ParsedBlock`; :func:`with_images` reads its rows' image files into one
buffer per part (:mod:`.raw_images`: no bytes object per file); the release's ``batches`` then does, in file
order, what depends on the rows before (duplicates, unknown splits, groups) and yields :class:`RawBatch` es.
`build-hdf5` runs the parsing and the reading in worker processes (:mod:`.worker_stream`), ahead of the
process that writes the file. Every bad input is counted and listed (:mod:`.raw_problems`), so nothing is
dropped silently.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

import numpy as np

from bioclip_cli.data.raw_images import ImageReader
from bioclip_cli.data.raw_metadata import BlockSpec, Table, bytes_column, clean_ranks, rows_picker, stripped_cells
from bioclip_cli.data.raw_problems import ProblemLog, barcode_problems, missing_rank_bits
from bioclip_cli.data.taxonomy import LEVELS, NOT_CLASSIFIED
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
GROUPS_5M: dict[str, tuple[str, ...]] = {  # group -> metadata splits (docs/method.md, Data: groups)
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
class Parse5M:
    """Parses a block of the BIOSCAN-5M metadata in a worker: candidates are the rows of a `selected` split."""

    spec: BlockSpec
    images: str
    selected: tuple[bool, ...]  # per split code

    def __call__(self, block: bytes) -> ParsedBlock:
        n, cols = self.spec.cells(block)
        pid, split, chunk, barcode, order, family, genus, species, sampleid, dna_bin = cols
        keys, split = stripped_cells(pid), stripped_cells(split)
        unknown = len(SPLITS_5M)
        codes = np.fromiter(map(_SPLIT_BYTE_CODES.get, split, repeat(unknown)), dtype=np.int8, count=n)
        odd = {i: split[i].decode("utf-8") for i in np.flatnonzero(codes == unknown).tolist()}
        candidates = np.flatnonzero(np.asarray(self.selected)[codes])
        take = rows_picker(candidates, n)
        pid, split, chunk, barcode = take(keys), take(split), stripped_cells(take(chunk)), stripped_cells(take(barcode))
        ranks = [clean_ranks(take(col)) for col in (order, family, genus, species)]
        strings = [barcode, *ranks, stripped_cells(take(sampleid)), [p + b".jpg" for p in pid], pid]
        strings.append(stripped_cells(take(dna_bin)))
        base = os.fsencode(self.images)
        paths = [
            b"%s/%s/%s/%s.jpg" % (base, s, c, p) if c else b"%s/%s/%s.jpg" % (base, s, p)
            for s, c, p in zip(split, chunk, pid)
        ]
        columns = [bytes_column(col) for col in strings]
        return ParsedBlock(
            n,
            bytes_column(keys),
            candidates,
            columns[-2],
            bytes_column(paths),
            columns,
            barcode_problems(barcode),
            missing_rank_bits(ranks),
            codes=codes,
            odd_splits=odd,
        )


@dataclass(frozen=True, slots=True)
class Parse1M:
    """Parses a block of the BIOSCAN-1M metadata in a worker (every row is a candidate: the partition decides)."""

    spec: BlockSpec
    images: str

    def __call__(self, block: bytes) -> ParsedBlock:
        n, cols = self.spec.cells(block)
        sid, image_file, chunk_number, order, family, genus, species, nucraw, dna_barcode, uri, dna_bin = cols
        sid, image_file = stripped_cells(sid), stripped_cells(image_file)
        keys = [f or s for f, s in zip(image_file, sid)]
        barcode = stripped_cells([a or b for a, b in zip(nucraw, dna_barcode)])  # nucraw, else dna_barcode
        bins = stripped_cells([a or b for a, b in zip(uri, dna_bin)])
        ranks = [clean_ranks(col) for col in (order, family, genus, species)]
        base = os.fsencode(self.images)
        paths = [b"%s/part%s/%s" % (base, c, f) for c, f in zip(stripped_cells(chunk_number), image_file)]
        columns = [bytes_column(col) for col in (barcode, *ranks, sid, image_file, bins)]
        return ParsedBlock(
            n,
            bytes_column(keys),
            np.arange(n),
            columns[-2],
            bytes_column(paths),
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


def _rank_widths(widths: dict[str, int]) -> dict[str, int]:
    """Room for ``not_classified`` in the rank columns (missing ranks are written so)."""
    return {k: max(w, len(NOT_CLASSIFIED)) if k in LEVELS else w for k, w in widths.items()}


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


def _first_file(candidates: list[Path]) -> Path:
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(
        candidates[0],
        f"no BIOSCAN-1M metadata ({METADATA_1M_NAME}) at {' or '.join(map(str, candidates))}",
        "download it with `bioclip download 1m --what metadata`",
    )
