"""The specimens a user hands to `embed` or `predict`: photographs, barcodes, or a manifest pairing them.

- images: files, folders (searched recursively for image files by extension, in sorted order) and glob
  patterns (``photos/**/*.jpg``); the specimen id is the path as found (relative paths stay relative);
- a FASTA file: one specimen per record, id = the record's id;
- a manifest (:mod:`.manifest`): one specimen per row, its image and barcode paired by id, with taxonomy.

Every specimen keeps its id, so outputs can be joined back to the user's own records.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bioclip_cli.data.fasta import read_fasta
from bioclip_cli.errors import BioclipError, DataError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
_GLOB_CHARS = set("*?[")


@dataclass
class Specimen:
    """One specimen to embed or identify."""

    id: str
    image: Path | None = None
    barcode: str | None = None
    taxonomy: dict[str, str] = field(default_factory=dict)  # level -> name, when the input says

    @property
    def feature(self) -> str:
        """What the specimen gives: image, dna, or avg (both)."""
        if self.image is not None and self.barcode is not None:
            return "avg"
        return "image" if self.image is not None else "dna"


def expand_image_paths(paths: Sequence[str | Path], missing_ok: bool = False) -> list[Path]:
    """Image files from files, folders (recursive, by extension) and globs, in the order given (each folder
    and glob sorted); DataError for a path that matches nothing (`missing_ok`: a plain path that does not
    exist is kept, for a caller that reports it per input)."""
    found: list[Path] = []
    for raw in paths:
        text = str(raw)
        if set(text) & _GLOB_CHARS and not Path(text).exists():
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            files = [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_EXTENSIONS]
            if not files:
                raise DataError(
                    text, f"no image file matches {text}", f"image files end in {', '.join(IMAGE_EXTENSIONS)}"
                )
            found += files
            continue
        path = Path(text)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise DataError(
                    path, f"folder {path} holds no image files", f"looked for {', '.join(IMAGE_EXTENSIONS)}"
                )
            found += files
        elif path.exists() or missing_ok:
            found.append(path)
        else:
            raise DataError(path, f"{path} does not exist", "give image files, folders or glob patterns")
    return found


def specimens_from_images(paths: Sequence[str | Path]) -> list[Specimen]:
    return [Specimen(str(p), image=p) for p in expand_image_paths(paths)]


def specimens_from_fasta(path: str | Path) -> list[Specimen]:
    return [Specimen(rec.id, barcode=rec.sequence) for rec in read_fasta(path)]


def specimens_from_manifest(path: str | Path) -> tuple[list[Specimen], list[tuple[str, str, str]]]:
    """The usable rows of a manifest as specimens, and its problems ``(kind, id, detail)``."""
    from bioclip_cli.data.manifest import read_manifest

    manifest = read_manifest(path)
    specimens = [Specimen(r.id, r.image, r.barcode, dict(r.taxonomy)) for r in manifest.rows]
    return specimens, manifest.problems


def collect_specimens(
    images: Sequence[str | Path] = (), fasta: str | Path | None = None, manifest: str | Path | None = None
) -> tuple[list[Specimen], list[tuple[str, str, str]]]:
    """Specimens from exactly one kind of input, or images + FASTA paired in order; and input problems."""
    if manifest is not None:
        if images or fasta is not None:
            raise BioclipError("--manifest pairs images and barcodes itself; do not combine it with --images/--fasta")
        return specimens_from_manifest(manifest)
    photos = specimens_from_images(images) if images else []
    barcodes = specimens_from_fasta(fasta) if fasta is not None else []
    if not photos and not barcodes:
        raise BioclipError("nothing to embed: give --images PATH..., --fasta FILE or --manifest FILE")
    if photos and barcodes:
        if len(photos) != len(barcodes):
            raise BioclipError(
                f"{len(photos)} image(s) and {len(barcodes)} barcode(s): paired in order, the counts must match",
                "pair them by id in a manifest (id,image,barcode,...) and pass --manifest",
            )
        return [Specimen(b.id, p.image, b.barcode) for p, b in zip(photos, barcodes)], []
    return photos or barcodes, []
