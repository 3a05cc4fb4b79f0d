"""A specimen manifest: a lab's own photographs and barcodes, one row per specimen, as CSV or TSV.

Header (order free, names case-insensitive)::

    id,image,barcode,order,family,genus,species,split

- ``id`` (required, unique): the specimen's identifier; it becomes the sample id of every output.
- ``image``: a path relative to the manifest's folder (absolute paths are refused: a manifest must be movable
  with its images, and a path may not leave that folder); ``barcode``: the DNA barcode (alignment gaps ``-``
  and ``.`` are removed, as everywhere in bioscan-clip). At least one of the two columns must exist.
- ``order``, ``family``, ``genus``, ``species``: taxonomy; blank (or a missing column) = not classified.
- ``split`` (optional): BIOSCAN-5M split values (pretrain, train, val, test, key_unseen, val_unseen,
  test_unseen, other_heldout), mapped to groups as for BIOSCAN-5M. Without it, a partition rule draws groups.
- any other column is kept as metadata (stored as a string column of the same name).

:func:`read_manifest` never stops at the first bad row: every problem (missing file, duplicate id, bad
barcode characters, unknown split, a path escaping the folder) is collected per row for the build report,
and only the rows without problems are returned as usable.

The standard library's `csv` module reads the file (quoting, embedded separators); a table library is not
needed for lab-sized manifests (thousands to a few hundred thousand rows).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from bioclip_cli.data.build_raw import SPLITS_5M
from bioclip_cli.data.dna import strip_gaps
from bioclip_cli.data.taxonomy import LEVELS, clean_rank
from bioclip_cli.errors import DataError

SPLITS_5M_VALUES = SPLITS_5M  # the split column's values (mapped to groups as for BIOSCAN-5M)
KNOWN_COLUMNS: tuple[str, ...] = ("id", "image", "barcode", *LEVELS, "split")
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg")
_BARCODE_LETTERS = set("ACGTN")


@dataclass
class ManifestRow:
    """One usable specimen of a manifest."""

    id: str
    image: Path | None  # absolute path, inside the manifest's folder
    barcode: str | None  # upper case, gaps removed
    taxonomy: dict[str, str]  # level -> name (not_classified when blank)
    split: str | None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class Manifest:
    """The usable rows, the problems of the others (kind, id, detail), and what the file held."""

    path: Path
    rows: list[ManifestRow]
    problems: list[tuple[str, str, str]]  # (kind, id, detail)
    columns: list[str]
    extra_columns: list[str]
    has_split: bool
    rows_read: int
    gap_rows: int = 0  # rows whose barcode held alignment gaps (removed)

    @property
    def has_images(self) -> bool:
        return "image" in self.columns

    @property
    def has_barcodes(self) -> bool:
        return "barcode" in self.columns

    def by_id(self) -> dict[str, ManifestRow]:
        return {row.id: row for row in self.rows}


def _dialect(path: Path, head: str) -> str:
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    if path.suffix.lower() == ".csv":
        return ","
    return "\t" if head.count("\t") > head.count(",") else ","


def read_manifest(path: str | Path, *, require: tuple[str, ...] = ()) -> Manifest:
    """Read and check a manifest; `require` names columns that must exist (e.g. ``("image", "barcode")``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"manifest {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(path, f"manifest {path} is not UTF-8 text (byte {exc.start})", "save it as UTF-8 CSV") from exc
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise DataError(path, f"manifest {path} is empty", "its first line is the header: id,image,barcode,...")
    reader = csv.reader(lines, delimiter=_dialect(path, lines[0]))
    header = [h.strip().lower() for h in next(reader)]
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise DataError(path, f"manifest {path} names column(s) {', '.join(duplicated)} twice")
    if "id" not in header:
        raise DataError(
            path,
            f"manifest {path} has no `id` column (it has: {', '.join(header)})",
            "the header is id,image,barcode,order,family,genus,species[,split]",
        )
    missing = [c for c in require if c not in header]
    if not any(c in header for c in ("image", "barcode")):
        missing = missing or ["image or barcode"]
    if missing:
        raise DataError(
            path, f"manifest {path} has no {' or '.join(missing)} column (it has: {', '.join(header)})", None
        )
    extra = [h for h in header if h not in KNOWN_COLUMNS and h]
    folder = path.parent.resolve()
    out = Manifest(path, [], [], header, extra, "split" in header, 0)
    seen: set[str] = set()
    for line_no, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        out.rows_read += 1
        cells = cells + [""] * (len(header) - len(cells))
        row = dict(zip(header, (c.strip() for c in cells)))
        sid = row.get("id", "")
        if not sid:
            out.problems.append(("missing_id", f"line {line_no}", "the id cell is empty"))
            continue
        if sid in seen:
            out.problems.append(("duplicate_id", sid, f"line {line_no} repeats an earlier id"))
            continue
        seen.add(sid)
        problem = _row_problem(row, folder, out)
        if problem is not None:
            out.problems.append((problem[0], sid, problem[1]))
            continue
        out.rows.append(_usable(row, folder, out, extra))
    return out


def _image_path(cell: str, folder: Path) -> tuple[Path | None, str | None]:
    """The image file of a cell inside `folder`, or (None, why not)."""
    if os.path.isabs(cell) or cell.startswith("~"):
        return None, f"{cell} is an absolute path; give it relative to the manifest's folder"
    path = Path(os.path.normpath(folder / cell))  # lexically: a symlinked image file is fine, `../` is not
    if not path.is_relative_to(folder):
        return None, f"{cell} leaves the manifest's folder"
    if not path.is_file():
        return None, f"{cell} does not exist" if not path.exists() else f"{cell} is not a file"
    return path, None


def _row_problem(row: dict, folder: Path, manifest: Manifest) -> tuple[str, str] | None:
    if manifest.has_split:
        split = row.get("split", "")
        if split not in SPLITS_5M_VALUES:
            return "unknown_split", f"split {split!r} is not one of {', '.join(SPLITS_5M_VALUES)}"
    cell = row.get("image", "")
    if manifest.has_images and cell:
        image, why = _image_path(cell, folder)
        if image is None:
            kind = "path_outside_folder" if "leaves" in why or "absolute" in why else "missing_image"
            return kind, why
    barcode = strip_gaps(row.get("barcode", "").upper())
    odd = sorted(set(barcode) - _BARCODE_LETTERS)
    if odd:
        return "barcode_chars", f"characters {''.join(odd[:20])} (only A, C, G, T, N and gaps - . are read)"
    if not cell and not barcode:
        return "empty_row", "neither an image nor a barcode"
    return None


def _usable(row: dict, folder: Path, manifest: Manifest, extra: list[str]) -> ManifestRow:
    raw = row.get("barcode", "").upper()
    barcode = strip_gaps(raw)
    if barcode != raw:
        manifest.gap_rows += 1
    cell = row.get("image", "")
    return ManifestRow(
        id=row["id"],
        image=Path(os.path.normpath(folder / cell)) if cell else None,
        barcode=barcode or None,
        taxonomy={level: clean_rank(row.get(level, "")) for level in LEVELS},
        split=row.get("split") or None,
        extra={name: row.get(name, "") for name in extra},
    )
