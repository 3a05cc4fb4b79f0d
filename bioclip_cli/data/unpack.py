"""Safe extraction of zip and tar archives into the raw-data layout that `build-hdf5` reads.

Every member name is checked before anything is written: absolute paths, `..` components, symbolic or
hard links and device files make the whole archive refused. Member paths are then mapped onto the
layout of the bioscan-dataset package (the raw releases' own layout), relative to the `into` folder:

    bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv
    bioscan5m/images/cropped_256/{split}/{chunk}/{processid}.jpg     (chunk absent for evaluation splits)
    bioscan1m/BIOSCAN_Insect_Dataset_metadata.tsv
    bioscan1m/images/cropped_256/part{N}/{image_file}
    bioscan1m/CLIBD_partitioning/{group}.txt

The mapping (:func:`layout_path`) finds the first folder of a member path that anchors it in the layout
(e.g. `bioscan5m`, `cropped_256`, a split name) and keeps everything after it, so archives packed with
or without a top folder land in the same place.
"""

from __future__ import annotations

import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bioclip_cli.errors import DataError

SPLITS_5M = ("pretrain", "train", "val", "test", "key_unseen", "val_unseen", "test_unseen", "other_heldout")

# layout -> {anchoring folder name: where the rest of the path goes}
_ANCHORS: dict[str, dict[str, str]] = {
    "bioscan5m": {
        "bioscan5m": "bioscan5m",
        "bioscan": "bioscan5m",
        "metadata": "bioscan5m/metadata",
        "images": "bioscan5m/images",
        "cropped_256": "bioscan5m/images/cropped_256",
        **{split: f"bioscan5m/images/cropped_256/{split}" for split in SPLITS_5M},
    },
    "bioscan1m": {
        "bioscan1m": "bioscan1m",
        "bioscan": "bioscan1m",
        "CLIBD_partitioning": "bioscan1m/CLIBD_partitioning",
        "images": "bioscan1m/images",
        "cropped_256": "bioscan1m/images/cropped_256",
        "original_256": "bioscan1m/images/original_256",
    },
}
# layout -> {suffix of a file with no anchoring folder: its folder}
_LOOSE_FILES: dict[str, dict[str, str]] = {
    "bioscan5m": {".csv": "bioscan5m/metadata/csv"},
    "bioscan1m": {".tsv": "bioscan1m", ".txt": "bioscan1m/CLIBD_partitioning"},
}


@dataclass(frozen=True)
class UnpackResult:
    """Files written, files already in place (same size), bytes written."""

    into: Path
    files: int
    skipped: int
    bytes: int


@dataclass(frozen=True)
class _Member:
    name: str
    size: int
    is_dir: bool
    problem: str | None  # why it is unsafe, or None


def _problem(name: str, is_link: bool, is_special: bool) -> str | None:
    clean = name.replace("\\", "/")
    if clean.startswith("/") or re.match(r"^[A-Za-z]:", clean):
        return "is an absolute path"
    if ".." in clean.split("/"):
        return "contains '..'"
    if is_link:
        return "is a link"
    if is_special:
        return "is a device or special file"
    return None


def safe_parts(name: str) -> tuple[str, ...]:
    """The path components of a member name, after the safety checks (raises ValueError when unsafe)."""
    problem = _problem(name, False, False)
    if problem:
        raise ValueError(f"{name!r} {problem}")
    return tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))


def layout_path(name: str, layout: str | None) -> PurePosixPath:
    """Where member `name` goes, relative to the unpack folder (see the module docstring)."""
    parts = safe_parts(name)
    if layout is None:
        return PurePosixPath(*parts)
    anchors = _ANCHORS[layout]
    for i, folder in enumerate(parts[:-1]):
        if folder in anchors:
            return PurePosixPath(anchors[folder], *parts[i + 1 :])
    suffix = PurePosixPath(parts[-1]).suffix.lower()
    folder = _LOOSE_FILES[layout].get(suffix, layout)
    return PurePosixPath(folder, parts[-1])


def _zip_members(archive: zipfile.ZipFile) -> Iterator[tuple[_Member, zipfile.ZipInfo]]:
    for info in archive.infolist():
        mode = info.external_attr >> 16
        problem = _problem(info.filename, stat.S_ISLNK(mode), False)
        yield _Member(info.filename, info.file_size, info.is_dir(), problem), info


def _tar_members(archive: tarfile.TarFile) -> Iterator[tuple[_Member, tarfile.TarInfo]]:
    for info in archive.getmembers():
        special = not (info.isfile() or info.isdir() or info.issym() or info.islnk())
        problem = _problem(info.name, info.issym() or info.islnk(), special)
        yield _Member(info.name, info.size, info.isdir(), problem), info


def _refuse_unsafe(path: Path, members: list[_Member]) -> None:
    for member in members:
        if member.problem:
            raise DataError(
                path,
                f"refusing to unpack {path}: member {member.name!r} {member.problem} (it would land outside the "
                "destination)",
                "the archive is not the published one: delete it and download it again",
            )


def archive_size(archive: str | Path) -> int | None:
    """Total uncompressed bytes of the files in a zip or tar archive (None when it is neither)."""
    archive = Path(archive)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as handle:
            return sum(info.file_size for info in handle.infolist())
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive, "r:*") as handle:
            return sum(info.size for info in handle.getmembers() if info.isfile())
    return None


def unpack(
    archive: str | Path,
    into: str | Path,
    layout: str | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> UnpackResult:
    """Extract a zip or tar archive under `into`, mapping member paths with `layout` (None: as they are).

    All members are checked first; one unsafe member refuses the whole archive and nothing is written.
    Files already present with the member's size are kept (an interrupted unpack continues).
    """
    archive, into = Path(archive), Path(into)
    on_bytes = on_bytes or (lambda n: None)
    if layout is not None and layout not in _ANCHORS:
        raise DataError(archive, f"unknown unpack layout {layout!r}; known: {', '.join(_ANCHORS)}")
    if zipfile.is_zipfile(archive):
        handle = zipfile.ZipFile(archive)
        entries = list(_zip_members(handle))
        open_member = handle.open
    elif tarfile.is_tarfile(archive):
        handle = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed below
        entries = list(_tar_members(handle))
        open_member = handle.extractfile
    else:
        raise DataError(archive, f"{archive} is neither a zip nor a tar archive", "delete it and download it again")
    files = skipped = written = 0
    with handle:
        _refuse_unsafe(archive, [member for member, _ in entries])
        for member, info in entries:
            if member.is_dir:
                continue
            target = into.joinpath(*layout_path(member.name, layout).parts)
            if target.is_file() and target.stat().st_size == member.size:
                skipped += 1
                on_bytes(member.size)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with open_member(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            files += 1
            written += member.size
            on_bytes(member.size)
    return UnpackResult(into, files, skipped, written)
