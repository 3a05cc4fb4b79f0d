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
from collections.abc import Iterator
from dataclasses import dataclass, field
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
_ACGTN_REMOVED = str.maketrans("", "", "ACGTN")


@dataclass(slots=True)
class RawRecord:
    """One metadata row, resolved: where its image is and which groups it belongs to."""

    id: str  # processid (5M) or image_file (1M): the id listed in the report
    image_path: str
    groups: tuple[str, ...]
    strings: dict[str, str]  # barcode, order..species, sampleid, image_file, [processid], dna_bin


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

    def rows(self) -> Iterator[dict]:
        """The metadata rows as dicts, streamed (header checked first)."""
        return _read_table(self.metadata, ",", REQUIRED_5M)

    def record(self, row: dict, groups: tuple[str, ...]) -> RawRecord:
        pid = row["processid"].strip()
        strings = {
            "barcode": (row.get("dna_barcode") or "").strip(),
            **{level: clean_rank(row.get(level)) for level in LEVELS},
            "sampleid": (row.get("sampleid") or "").strip(),
            "image_file": f"{pid}.jpg",
            "processid": pid,
            "dna_bin": (row.get("dna_bin") or "").strip(),
        }
        split = row["split"].strip()
        return RawRecord(pid, self.image_path(split, (row.get("chunk") or "").strip(), pid), groups, strings)


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

    def rows(self) -> Iterator[dict]:
        return _read_table(self.metadata, "\t", REQUIRED_1M, any_of=("nucraw", "dna_barcode"))

    def record(self, row: dict, groups: tuple[str, ...]) -> RawRecord:
        image_file = row["image_file"].strip()
        strings = {
            "barcode": (row.get("nucraw") or row.get("dna_barcode") or "").strip(),
            **{level: clean_rank(row.get(level)) for level in LEVELS},
            "sampleid": row["sampleid"].strip(),
            "image_file": image_file,
            "dna_bin": (row.get("uri") or row.get("dna_bin") or "").strip(),
        }
        path = f"{self.images}/part{row['chunk_number'].strip()}/{image_file}"
        return RawRecord(image_file, path, groups, strings)


def _read_table(path: Path, delimiter: str, required: tuple[str, ...], any_of: tuple[str, ...] = ()):
    """Rows of a CSV/TSV as dicts (``csv.reader`` + ``dict(zip())``: faster than DictReader), header checked."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header = next(reader, [])
        missing = [c for c in required if c not in header]
        if any_of and not set(any_of) & set(header):
            missing.append(" or ".join(any_of))
        if missing:
            raise DataError(path, f"{path} lacks column(s) {', '.join(missing)}; it has: {', '.join(header)}")
        width = len(header)
        for row in reader:
            if len(row) < width:
                row += [""] * (width - len(row))
            yield dict(zip(header, row))


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
