"""The raw BIOSCAN releases, read as a stream of records for `build-hdf5` (SPEC §4).

- 5M (the layout of the `bioscan-dataset` package): ``R/bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv``
  and ``R/bioscan5m/images/{package}/{split}/{chunk}/{processid}.jpg`` (no chunk folder for the evaluation
  splits). Groups come from the ``split`` column (:data:`GROUPS_5M`).
- 1M: the metadata TSV ``BIOSCAN_Insect_Dataset_metadata.tsv``, images ``{package}/part{chunk_number}/{image_file}``
  and the published partition: one ``{group}.txt`` file per group listing sampleids, one per line.

Also the per-record checks (image bytes, barcode characters) and :class:`ProblemLog`, which counts and
lists every bad input so nothing is dropped silently.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

from bioclip_cli.data.taxonomy import LEVELS, clean_rank
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
# the 5M metadata columns a record is made of, in the order Release5M.make_record unpacks them
_COLUMNS_5M = ("processid", "split", "chunk", "dna_barcode", *LEVELS, "sampleid", "dna_bin")
_ACGTN_REMOVED = str.maketrans("", "", "ACGTN")
_READ_SIZE = 1 << 20  # one read() for any JPEG up to 1 MiB
_BLOCK_CHARS = 1 << 20  # metadata characters parsed per block
STRINGS_5M: tuple[str, ...] = ("barcode", *LEVELS, "sampleid", "image_file", "processid", "dna_bin")
STRINGS_1M: tuple[str, ...] = ("barcode", *LEVELS, "sampleid", "image_file", "dna_bin")


@dataclass(slots=True)
class RawRecord:
    """One metadata row, resolved: where its image is and which groups it belongs to."""

    id: str  # processid (5M) or image_file (1M): the id listed in the report
    image_path: str
    groups: tuple[str, ...]
    values: tuple[str, ...]  # the string columns, in the release's order (STRINGS_5M / STRINGS_1M)
    names: tuple[str, ...] = STRINGS_5M

    @property
    def strings(self) -> dict[str, str]:
        """``{column: value}``: barcode, order..species, sampleid, image_file, [processid], dna_bin."""
        return dict(zip(self.names, self.values))


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

    def count_rows(self) -> int:
        return count_lines(self.metadata) - 1

    def image_path(self, split: str, chunk: str, processid: str) -> str:
        if chunk:
            return f"{self.images}/{split}/{chunk}/{processid}.jpg"
        return f"{self.images}/{split}/{processid}.jpg"

    def table(self) -> Table:
        """The metadata, streamed as lists of cells (header checked first)."""
        return Table(self.metadata, ",", REQUIRED_5M)

    def rows(self) -> Iterator[dict]:
        """The metadata rows as dicts, streamed (header checked first)."""
        return self.table().dicts()

    def record(self, row: dict, groups: tuple[str, ...]) -> RawRecord:
        """A record from a row dict (:meth:`cells` and :meth:`make_record` are the fast path over a table)."""
        return self.make_record([row.get(name) or "" for name in _COLUMNS_5M], groups)

    def cells(self, table: Table) -> Iterator[Sequence[str]]:
        """For every metadata row, the cells :meth:`make_record` takes (processid and split first)."""
        idx = [table.columns.get(name) for name in _COLUMNS_5M]
        width = len(table.header)
        pick = itemgetter(*idx) if None not in idx else None  # optional columns (chunk, dna_bin) may be absent
        for row in table:
            yield pick(row) if pick is not None and len(row) >= width else _pad(row, idx)

    def make_record(self, cells: Sequence[str], groups: tuple[str, ...]) -> RawRecord:
        """The record of one row's :meth:`cells`, in the given groups."""
        pid, split, chunk, barcode, order, family, genus, species, sampleid, dna_bin = cells
        pid, chunk = pid.strip(), chunk.strip()
        values = (
            barcode.strip(),
            _rank(order),
            _rank(family),
            _rank(genus),
            _rank(species),
            sampleid.strip(),
            f"{pid}.jpg",
            pid,
            dna_bin.strip(),
        )
        return RawRecord(pid, self.image_path(split.strip(), chunk, pid), groups, values, STRINGS_5M)


class Release1M:
    """The raw BIOSCAN-1M release: metadata TSV, `part{N}` image folders and the partition files."""

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

    def count_rows(self) -> int:
        return count_lines(self.metadata) - 1

    def table(self) -> Table:
        return Table(self.metadata, "\t", REQUIRED_1M, any_of=("nucraw", "dna_barcode"))

    def rows(self) -> Iterator[dict]:
        return self.table().dicts()

    def record(self, row: dict, groups: tuple[str, ...]) -> RawRecord:
        image_file = row["image_file"].strip()
        values = (
            (row.get("nucraw") or row.get("dna_barcode") or "").strip(),
            *(clean_rank(row.get(level)) for level in LEVELS),
            row["sampleid"].strip(),
            image_file,
            (row.get("uri") or row.get("dna_bin") or "").strip(),
        )
        path = f"{self.images}/part{row['chunk_number'].strip()}/{image_file}"
        return RawRecord(image_file, path, groups, values, STRINGS_1M)


class Table:
    """A CSV/TSV read as a stream of cell lists (``csv.reader``: no dict per row); the header is checked on
    construction and ``columns`` maps each name to its index."""

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
        """The rows after the header, as ``csv.reader`` gives them (a blank line is ``[]``).

        Read in blocks of whole lines: a block without any quote character is split with ``str.split``
        (several times faster than the csv module, same cells); a block with quotes goes through
        ``csv.reader``, extended until its quotes balance so that no quoted field is cut."""
        delimiter = self.delimiter
        with open(self.path, newline="", encoding="utf-8") as fh:
            fh.readline()  # the header (checked in __init__)
            tail = ""
            while True:
                block = fh.read(_BLOCK_CHARS)
                if not block:
                    break
                block = tail + block
                cut = block.rfind("\n") + 1
                if cut == 0:  # no line end yet: read on
                    tail = block
                    continue
                block, tail = block[:cut], block[cut:]
                if '"' in block and block.count('"') % 2:  # a quoted field runs on: read on
                    tail = block + tail
                    continue
                yield from _split_lines(block, delimiter)
            if tail:
                yield from _split_lines(tail if tail.endswith("\n") else tail + "\n", delimiter)

    def dicts(self) -> Iterator[dict]:
        width = len(self.header)
        for row in self:
            if len(row) < width:
                row += [""] * (width - len(row))
            yield dict(zip(self.header, row))


_RANKS: dict[str, str] = {}  # raw rank cell -> clean_rank(cell): a few thousand distinct values repeat


def _rank(cell: str) -> str:
    value = _RANKS.get(cell)
    if value is None:
        value = clean_rank(cell)
        if len(_RANKS) < 1 << 20:
            _RANKS[cell] = value
    return value


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
    """The cells at `idx` of a short row (missing cells read as empty)."""
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


def count_lines(path: Path) -> int:
    """Newlines in a file, read in 4 MiB blocks (for the progress bar's total)."""
    n = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            n += block.count(b"\n")
    return n


# ----------------------------------------------------------------------------------------- checks


def read_file(path: str) -> bytes:
    """A whole file's bytes with plain system calls (less per-file overhead than ``open().read()``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, _READ_SIZE)
        if len(data) < _READ_SIZE:
            return data
        parts = [data]
        while block := os.read(fd, _READ_SIZE):
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
    if b"\xff\xd9" not in data.rstrip(b"\0")[-64:]:  # a few bytes after the marker are tolerated
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


def barcode_problem(seq: str) -> str | None:
    if not seq:
        return "empty_barcode"
    if seq.translate(_ACGTN_REMOVED):
        return "barcode_chars"
    return None


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
