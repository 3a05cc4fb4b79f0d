"""The raw INSECT release of BZSL (Badirli et al. 2021) read into an :class:`InsectTable`.

Files (docs/method.md, "INSECT dataset"):

- ``res101.mat``: ``labels`` [N x 1] 1-based class ids, ``ids`` (image names without extension),
  ``bold_ids``, ``species``, ``nucleotides`` (raw COI), and ``features`` [2048 x N] (ResNet-101; not read);
- ``att_splits.mat``: ``trainval_loc``, ``train_loc``, ``val_loc``, ``test_seen_loc``, ``test_unseen_loc``,
  1-based row indices into res101's rows;
- images ``images/<species>/<id>.jpg`` (some ``.JPG``), full size.

The table is the one of the processed release's ``INSECT_metadata.csv`` (labels 0-based, the ``*_loc`` lists
as masks, rows in res101 order). MATLAB strings reach Python in several shapes (scipy.io.loadmat: a cell
array gives an object array of 1-element or empty char arrays, possibly nested; a char matrix gives one
space-padded str per row); :func:`mat_strings` accepts them all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bioclip_cli.data.insect_table import SPLITS, InsectTable
from bioclip_cli.errors import DataError

RES101 = "res101.mat"
ATT_SPLITS = "att_splits.mat"
RES101_STRINGS: tuple[str, ...] = ("ids", "bold_ids", "species", "nucleotides")
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".JPG", ".jpeg", ".JPEG")
RAW_HINT = "the raw INSECT release (res101.mat, att_splits.mat, images/) is linked from the BZSL repository"


def _cell_string(value) -> str:
    """One MATLAB string as Python reads it: a str, bytes, a (nested) 0/1-element array, or an array of chars."""
    while isinstance(value, np.ndarray):
        if value.dtype == object:
            if value.size == 0:
                return ""
            if value.size != 1:
                raise ValueError(f"a cell holds {value.size} values, expected one string")
            value = value.reshape(-1)[0]
        elif value.dtype.kind in "US":
            flat = value.reshape(-1)
            if flat.size == 0:
                return ""
            if flat.size == 1:
                value = flat[0]
            else:  # a char array split into single characters
                value = "".join(_cell_string(v) for v in flat)
        elif value.size == 0:
            return ""
        elif value.size == 1:
            value = value.reshape(-1)[0]
        else:
            raise ValueError(f"expected a string, got a numeric array of shape {value.shape}")
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))  # a numeric id stored as a number
    return str(value)


def mat_strings(value, name: str = "variable") -> list[str]:
    """A MATLAB cell array of strings (N x 1 or 1 x N) or char matrix (N rows) as N Python strings."""
    arr = np.asarray(value)
    if arr.dtype.kind in "US":  # a char matrix: one space-padded string per row
        single = arr.dtype.itemsize == np.dtype(arr.dtype.kind + "1").itemsize
        if arr.ndim == 2 and single and arr.shape[1] > 1:  # one character per cell [N, L]
            return ["".join(_cell_string(c) for c in row).rstrip(" ") for row in arr]
        return [_cell_string(s).rstrip(" ") for s in arr.reshape(-1)]
    if arr.dtype == object:
        if arr.ndim == 2 and 1 not in arr.shape:
            raise ValueError(f"{name}: a {arr.shape} cell array, expected N x 1 or 1 x N")
        return [_cell_string(v) for v in arr.reshape(-1)]
    raise ValueError(f"{name}: expected strings, got a {arr.dtype} array")


def mat_indices(value, name: str) -> np.ndarray:
    """A MATLAB index vector (any N x 1 / 1 x N shape, integer or float) as an int64 [N] array."""
    arr = np.asarray(value).reshape(-1)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{name}: expected numbers, got {arr.dtype}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        raise ValueError(f"{name}: holds values that are not integers")
    return arr.astype(np.int64)


def _load(path: Path, names: tuple[str, ...]) -> dict:
    from scipy.io import loadmat

    if not path.is_file():
        raise DataError(path, f"{path} does not exist", RAW_HINT)
    try:
        data = loadmat(str(path), variable_names=list(names))
    except NotImplementedError:  # MATLAB v7.3 files are HDF5 files
        raise DataError(
            path, f"{path} is a MATLAB v7.3 (HDF5) file; the INSECT release's files are v5", "re-save it with -v7"
        ) from None
    except (ValueError, OSError, TypeError) as exc:
        raise DataError(path, f"{path} is not a readable MATLAB file ({exc})") from None
    missing = [n for n in names if n not in data]
    if missing:
        raise DataError(path, f"{path} lacks the variable(s) {', '.join(missing)}", RAW_HINT)
    return data


def read_raw_insect(folder: str | Path) -> InsectTable:
    """The rows of ``folder/res101.mat`` with the splits of ``folder/att_splits.mat``; labels made 0-based."""
    folder = Path(folder)
    res_path, att_path = folder / RES101, folder / ATT_SPLITS
    res = _load(res_path, ("labels", *RES101_STRINGS))
    att = _load(att_path, tuple(f"{s}_loc" for s in SPLITS))
    try:
        labels = mat_indices(res["labels"], "labels")
        strings = {name: mat_strings(res[name], name) for name in RES101_STRINGS}
    except ValueError as exc:
        raise DataError(res_path, f"{res_path}: {exc}") from None
    n = len(labels)
    wrong = {name: len(v) for name, v in strings.items() if len(v) != n}
    if wrong:
        detail = ", ".join(f"{k} {v}" for k, v in wrong.items())
        raise DataError(res_path, f"{res_path}: labels has {n} rows but {detail}")
    if n and labels.min() < 1:
        raise DataError(res_path, f"{res_path}: labels must be 1-based class ids, found {int(labels.min())}")
    masks = {}
    for split in SPLITS:
        try:
            loc = mat_indices(att[f"{split}_loc"], f"{split}_loc")
        except ValueError as exc:
            raise DataError(att_path, f"{att_path}: {exc}") from None
        if len(loc) and (loc.min() < 1 or loc.max() > n):
            raise DataError(
                att_path,
                f"{att_path}: {split}_loc holds row {int(loc.min() if loc.min() < 1 else loc.max())}, "
                f"outside 1..{n} (the rows of {RES101})",
                "the *_loc indices are 1-based rows of res101.mat; are the two files from the same release?",
            )
        mask = np.zeros(n, dtype=bool)
        mask[loc - 1] = True
        masks[split] = mask
    return InsectTable(
        bold_ids=strings["bold_ids"],
        ids=strings["ids"],
        labels=labels - 1,
        species=strings["species"],
        nucleotides=strings["nucleotides"],
        **masks,
    )


def raw_image_path(images: Path, species: str, image_id: str) -> Path:
    """``images/<species>/<id>.jpg`` (or the first existing of .JPG, .jpeg, .JPEG); the .jpg path when none exists."""
    folder = images / species
    for suffix in IMAGE_SUFFIXES:
        path = folder / f"{image_id}{suffix}"
        if path.is_file():
            return path
    return folder / f"{image_id}{IMAGE_SUFFIXES[0]}"
