"""Extracted-embedding files in the published layout (docs/method.md, Evaluation): write them, read them back.

Layout, shared with the released files of the paper::

    extracted_feature_from_{split}_split.hdf5
        seen/, unseen/, key/              one group per role, row-aligned with the labels
            encoded_image_feature         [N, d]   image embeddings
            encoded_dna_feature           [N, d]   DNA embeddings
            encoded_language_feature      [N, d]   taxonomy-text embeddings
            averaged_feature              [N, d]   (image + dna) / 2
            concatenated_feature          [N, 2d]  [image, dna]
            all_key_features              [3N, d]  key/ only: image, DNA and text rows stacked
            sample_ids                    [N]      ours only: processid or image_file of each row
    labels_{split}.json
        {"seen_gt_dict": [{"order", "family", "genus", "species"}, ...], "unseen_gt_dict": [...], "key_gt_dict": [...]}

Writing is safe to interrupt: groups go into `<name>.partial` (each marked complete only once all of its
datasets are written, labels kept in `labels_{split}.json.partial`), and the finished file is renamed into
place at the end. A rerun picks up the complete groups of the partial file, so only the rest is encoded
again (`EmbeddingFileWriter.completed_groups`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from bioclip_cli.atomic_write import OutputError, describe_os_error, resolve_output, write_text
from bioclip_cli.config.schema import LEVELS
from bioclip_cli.errors import DataError

GROUPS: tuple[str, ...] = ("seen", "unseen", "key")
QUERY_GROUPS: tuple[str, ...] = ("seen", "unseen")
# Short feature names (the command line's) -> published dataset names.
FEATURE_DATASETS: dict[str, str] = {
    "image": "encoded_image_feature",
    "dna": "encoded_dna_feature",
    "text": "encoded_language_feature",
    "avg": "averaged_feature",
    "concat": "concatenated_feature",
    "all": "all_key_features",
}
DATASET_FEATURES: dict[str, str] = {v: k for k, v in FEATURE_DATASETS.items()}
ENCODED: tuple[str, ...] = ("encoded_image_feature", "encoded_dna_feature", "encoded_language_feature")
SAMPLE_IDS = "sample_ids"
DTYPES = ("float32", "float64")
_COMPLETE = "complete"
_ROW_CHUNK = 65536  # rows per write of a derived feature (bounds the extra memory)


def embedding_file_paths(out_dir: str | Path, split: str) -> tuple[Path, Path]:
    """`(out_dir/extracted_feature_from_{split}_split.hdf5, out_dir/labels_{split}.json)`."""
    out_dir = Path(out_dir)
    return out_dir / f"extracted_feature_from_{split}_split.hdf5", out_dir / f"labels_{split}.json"


def label_key(group: str) -> str:
    """The labels-JSON key of a group: `seen` -> `seen_gt_dict`."""
    return f"{group}_gt_dict"


def dataset_name(feature: str) -> str:
    """A published dataset name for a short name (`image`) or a dataset name given as is."""
    if feature in FEATURE_DATASETS:
        return FEATURE_DATASETS[feature]
    if feature in DATASET_FEATURES:
        return feature
    known = ", ".join([*FEATURE_DATASETS, *FEATURE_DATASETS.values()])
    raise ValueError(f"unknown feature {feature!r}; expected one of {known}")


def derived_features(image: np.ndarray, dna: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(averaged, concatenated)` of row-aligned image and DNA embeddings: (image + dna) / 2 and [image, dna]."""
    image, dna = np.asarray(image), np.asarray(dna)
    if image.shape != dna.shape or image.ndim != 2:
        raise ValueError(f"image {image.shape} and dna {dna.shape} embeddings must be 2-D arrays of one shape")
    return (image + dna) / 2, np.concatenate([image, dna], axis=1)


def all_key_features(image: np.ndarray, dna: np.ndarray, text: np.ndarray) -> np.ndarray:
    """The `all` keys: image, DNA and text key embeddings stacked ([3N, d]; labels repeat 3 times)."""
    return np.concatenate([np.asarray(image), np.asarray(dna), np.asarray(text)], axis=0)


# ------------------------------------------------------------------------------------------------ write


def estimated_bytes(rows: Mapping[str, int], widths: Mapping[str, int], dtype: str = "float32") -> int:
    """Bytes the feature arrays of an embedding file take: rows x width x dtype size over every dataset
    (encoded, derived and the key group's all_key_features), for `rows[group]` and `widths[image|dna|text]`."""
    itemsize = np.dtype(dtype).itemsize
    encoded = {dataset_name(m): w for m, w in widths.items()}
    total = 0
    for group, n in rows.items():
        for name, width in _derived_layout(group, encoded).items():
            total += (3 * n if name == "all_key_features" else n) * width * itemsize
    return total


def _canonical_features(features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, value in features.items():
        if value is None:
            continue
        array = np.asarray(value)
        if array.ndim != 2:
            raise ValueError(f"feature {name!r} must be a 2-D array [rows, width], got shape {array.shape}")
        out[dataset_name(name)] = array
    return out


def _derived_layout(group: str, widths: Mapping[str, int]) -> dict[str, int]:
    """Dataset -> width for a group: the encoded features given, plus what can be derived from them."""
    layout = dict(widths)
    image, dna, text = (widths.get(n) for n in ENCODED)
    if image is not None and dna is not None and image == dna:
        layout.setdefault("averaged_feature", image)
        layout.setdefault("concatenated_feature", 2 * image)
    if group == "key" and image is not None and image == dna == text:
        layout.setdefault("all_key_features", image)
    return layout


class GroupWriter:
    """Writes one group batch by batch; `close()` checks the row count and marks the group complete.

    Use through :meth:`EmbeddingFileWriter.group_writer`. Each `append` takes the encoded features of a
    batch of rows (dataset or short names), their labels (level -> strings) and optionally their sample ids;
    averaged, concatenated and (key group) all_key features are derived batch by batch.
    """

    def __init__(self, owner: EmbeddingFileWriter, group: str, n_rows: int):
        self._owner = owner
        self.group = group
        self.n_rows = int(n_rows)
        self.rows_written = 0
        self._labels: dict[str, list[str]] = {}
        self._ids: list[str] | None = None
        self._layout: dict[str, int] | None = None
        self._closed = False

    def _create(self, widths: Mapping[str, int], levels: Sequence[str], with_ids: bool) -> None:
        f = self._owner._file()
        if self.group in f:
            del f[self.group]
        g = f.create_group(self.group)
        self._layout = _derived_layout(self.group, widths)
        for name, width in self._layout.items():
            rows = 3 * self.n_rows if name == "all_key_features" else self.n_rows
            g.create_dataset(name, shape=(rows, width), dtype=self._owner.dtype)
        self._labels = {level: [] for level in levels}
        self._ids = [] if with_ids else None

    def append(
        self,
        features: Mapping[str, np.ndarray],
        labels: Mapping[str, Sequence[str]],
        sample_ids: Sequence[str] | None = None,
    ) -> None:
        if self._closed:
            raise RuntimeError(f"group {self.group!r} is already closed")
        feats = _canonical_features(features)
        if not feats:
            raise ValueError("append() needs at least one feature array")
        if "all_key_features" in feats:
            raise ValueError("all_key_features is derived by the writer; pass the encoded key features instead")
        rows = {a.shape[0] for a in feats.values()}
        if len(rows) != 1:
            shapes = {k: v.shape for k, v in feats.items()}
            raise ValueError(f"features of one batch have different row counts: {shapes}")
        n = rows.pop()
        if self.rows_written + n > self.n_rows:
            raise ValueError(
                f"group {self.group!r}: {self.rows_written + n} rows appended, more than n_rows={self.n_rows}"
            )
        if self._layout is None:
            self._create({k: v.shape[1] for k, v in feats.items()}, list(labels), sample_ids is not None)
        layout = _derived_layout(self.group, {k: v.shape[1] for k, v in feats.items()})
        if layout != self._layout:
            raise ValueError(
                f"group {self.group!r}: batch features {layout} differ from the first batch's {self._layout}"
            )
        if set(labels) != set(self._labels):
            raise ValueError(
                f"group {self.group!r}: batch label levels {sorted(labels)} differ from {sorted(self._labels)}"
            )
        for level, values in labels.items():
            if len(values) != n:
                raise ValueError(f"group {self.group!r}: {len(values)} {level} labels for {n} rows")
        if (sample_ids is None) != (self._ids is None):
            raise ValueError(f"group {self.group!r}: give sample_ids with every batch or with none")
        if sample_ids is not None and len(sample_ids) != n:
            raise ValueError(f"group {self.group!r}: {len(sample_ids)} sample ids for {n} rows")
        self._write_rows(feats, self.rows_written, n)
        for level, values in labels.items():
            self._labels[level].extend(str(v) for v in values)
        if sample_ids is not None:
            self._ids.extend(str(s) for s in sample_ids)
        self.rows_written += n

    def _write_rows(self, feats: dict[str, np.ndarray], start: int, n: int) -> None:
        g = self._owner._file()[self.group]
        dtype = self._owner.dtype
        for name, array in feats.items():
            g[name][start : start + n] = array.astype(dtype, copy=False)
        image, dna, text = (feats.get(name) for name in ENCODED)
        derive = [
            name for name in ("averaged_feature", "concatenated_feature") if name in self._layout and name not in feats
        ]
        for s in range(0, n if derive else 0, _ROW_CHUNK):
            e = min(n, s + _ROW_CHUNK)
            averaged, concatenated = derived_features(image[s:e], dna[s:e])
            for name, array in zip(("averaged_feature", "concatenated_feature"), (averaged, concatenated)):
                if name in derive:
                    g[name][start + s : start + e] = array.astype(dtype, copy=False)
        if "all_key_features" in self._layout:
            for block, array in enumerate((image, dna, text)):
                offset = block * self.n_rows + start
                g["all_key_features"][offset : offset + n] = array.astype(dtype, copy=False)

    def close(self) -> None:
        """Check that every row arrived, then store ids and labels and mark the group complete."""
        if self._closed:
            return
        if self.rows_written != self.n_rows:
            raise ValueError(f"group {self.group!r}: {self.rows_written} of {self.n_rows} rows written")
        if self._layout is None:  # an empty group and no widths known: no feature datasets
            self._create({}, LEVELS, False)
        g = self._owner._file()[self.group]
        if self._ids is not None:
            g.create_dataset(SAMPLE_IDS, data=np.array(self._ids, dtype=object), dtype=h5py.string_dtype())
        self._owner._save_labels(self.group, self._labels)
        g.attrs[_COMPLETE] = True
        self._owner._file().flush()
        self._closed = True

    def __enter__(self) -> GroupWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


class EmbeddingFileWriter:
    """Writes `extracted_feature_from_{split}_split.hdf5` + `labels_{split}.json` group by group.

    Typical use by an encoder that may be interrupted::

        with EmbeddingFileWriter(out_dir, "val", dtype="float32") as writer:
            for group in GROUPS:
                if group in writer.completed_groups:
                    continue                                  # done by an earlier run
                with writer.group_writer(group, n_rows) as g:
                    for batch in ...:
                        g.append({"image": img, "dna": dna, "text": txt}, {"order": [...], ...}, ids)
            h5_path, labels_path = writer.finalize()

    Callers pass only the encoded features; averaged, concatenated and all_key features are derived.
    `overwrite=True` discards a finished file and any partial one. Write from one process only (with
    several GPUs: gather the rows in order, then write on the main process).
    """

    def __init__(self, out_dir: str | Path, split: str, dtype: str = "float32", overwrite: bool = False):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.out_dir = Path(out_dir)
        self.split = split
        self.dtype = dtype
        self.h5_path, self.labels_path = embedding_file_paths(out_dir, split)
        self.partial_path = self.h5_path.with_name(self.h5_path.name + ".partial")
        self.partial_labels_path = self.labels_path.with_name(self.labels_path.name + ".partial")
        self._h5: h5py.File | None = None
        if overwrite:
            for path in (self.h5_path, self.labels_path, self.partial_path, self.partial_labels_path):
                path.unlink(missing_ok=True)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.finished = self.h5_path.exists() and self.labels_path.exists()
        if not self.finished and self.partial_path.exists() and not self._partial_usable():
            self.partial_path.unlink()
            self.partial_labels_path.unlink(missing_ok=True)

    def _partial_usable(self) -> bool:
        try:
            with h5py.File(self.partial_path, "r") as f:
                return f.attrs.get("dtype") == self.dtype
        except OSError:  # truncated by a crash
            return False

    def _file(self) -> h5py.File:
        if self.finished:
            raise DataError(
                self.h5_path,
                f"{self.h5_path} is already complete",
                "delete it, or pass overwrite=True, to write it again",
            )
        if self._h5 is None:
            self._h5 = h5py.File(self.partial_path, "a")
            self._h5.attrs["dtype"] = self.dtype
            self._h5.attrs["split"] = self.split
            self._h5.attrs["format"] = "bioscan-clip extracted embeddings (published layout)"
        return self._h5

    def _partial_labels(self) -> dict:
        if self.partial_labels_path.exists():
            return json.loads(self.partial_labels_path.read_text())
        return {}

    def _save_labels(self, group: str, labels: Mapping[str, list[str]]) -> None:
        saved = self._partial_labels()
        levels = list(labels)
        columns = [labels[level] for level in levels]
        saved[label_key(group)] = [dict(zip(levels, row)) for row in zip(*columns)]
        write_text(self.partial_labels_path, json.dumps(saved))

    @property
    def completed_groups(self) -> set[str]:
        """Groups already written in full (all of them once the file is finished)."""
        if self.finished:
            return set(GROUPS)
        labels = self._partial_labels()
        if self._h5 is not None:
            f = self._h5
            return {g for g in GROUPS if g in f and f[g].attrs.get(_COMPLETE, False) and label_key(g) in labels}
        if not self.partial_path.exists():
            return set()
        with h5py.File(self.partial_path, "r") as f:
            return {g for g in GROUPS if g in f and f[g].attrs.get(_COMPLETE, False) and label_key(g) in labels}

    def group_writer(self, group: str, n_rows: int) -> GroupWriter:
        """A writer for `n_rows` rows of `group` (seen, unseen or key), filled by `append` calls."""
        if group not in GROUPS:
            raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
        self._file()
        return GroupWriter(self, group, n_rows)

    def write_group(
        self,
        group: str,
        features: Mapping[str, np.ndarray],
        labels: Mapping[str, Sequence[str]],
        sample_ids: Sequence[str] | None = None,
    ) -> None:
        """Write a whole group at once (see :class:`GroupWriter` for the arguments)."""
        feats = _canonical_features(features)
        rows = {a.shape[0] for a in feats.values()} | {len(v) for v in labels.values()}
        if len(rows) > 1:
            shapes = {**{k: v.shape for k, v in feats.items()}, **{k: len(v) for k, v in labels.items()}}
            raise ValueError(f"group {group!r}: features and labels have different row counts: {shapes}")
        n = rows.pop() if rows else 0
        with self.group_writer(group, n) as g:
            if n:
                g.append(feats, labels, sample_ids)
            else:  # keep the datasets (0 rows) so that the layout reads the same as a full group
                g._create({k: v.shape[1] for k, v in feats.items()}, list(labels) or LEVELS, sample_ids is not None)

    def finalize(self) -> tuple[Path, Path]:
        """Write the labels JSON, rename the HDF5 into place; returns `(h5_path, labels_path)`."""
        if self.finished:
            return self.h5_path, self.labels_path
        missing = set(GROUPS) - self.completed_groups
        if missing:
            raise ValueError(f"cannot finalize {self.h5_path.name}: groups {sorted(missing)} are not written yet")
        self.close()
        target = resolve_output(self.h5_path)  # a link is followed; a folder or device is refused
        labels = self._partial_labels()
        write_text(self.labels_path, json.dumps({label_key(g): labels[label_key(g)] for g in GROUPS}))
        fd = os.open(self.partial_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.partial_path, target)
        self.partial_labels_path.unlink(missing_ok=True)
        self.finished = True
        return self.h5_path, self.labels_path

    def close(self) -> None:
        """Close the partial file (what is complete stays there for a rerun)."""
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def discard(self, exc: OSError | None = None, needed: int | None = None) -> OutputError | None:
        """After a failed write (e.g. a full disk): close the partial file, delete it and its labels.

        Returns the one-sentence error for `exc` (naming the file and the bytes needed), when given."""
        h5, self._h5 = self._h5, None
        if h5 is not None:
            try:  # closing flushes; on a full disk that fails too, and the file is deleted anyway
                h5.close()
            except (OSError, RuntimeError, ValueError):
                pass
        for path in (self.partial_path, self.partial_labels_path):
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
        return describe_os_error(exc, self.h5_path, needed) if exc is not None else None

    def __enter__(self) -> EmbeddingFileWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def write_embedding_file(
    out_dir: str | Path,
    split: str,
    features: Mapping[str, Mapping[str, np.ndarray]],
    labels: Mapping[str, Mapping[str, Sequence[str]]],
    sample_ids: Mapping[str, Sequence[str]] | None = None,
    dtype: str = "float32",
) -> tuple[Path, Path]:
    """Write the published pair of files in one call; returns `(h5_path, labels_path)`.

    `features[group][name]` for group in seen/unseen/key and name a published dataset name (or image, dna,
    text); averaged, concatenated and all_key features are derived when image and DNA (and text, for `all`)
    are given. `labels[group][level]` are row-aligned strings; `sample_ids[group]` optional. A group left
    out of `features` must already be complete in a partial file of an earlier, interrupted run.
    """
    finished = all(path.exists() for path in embedding_file_paths(out_dir, split))
    with EmbeddingFileWriter(out_dir, split, dtype=dtype, overwrite=finished) as writer:
        done = writer.completed_groups
        for group in GROUPS:
            if group in features:
                ids = None if sample_ids is None else sample_ids.get(group)
                writer.write_group(group, features[group], labels[group], ids)
            elif group not in done:
                raise ValueError(f"no features given for group {group!r}, and no earlier partial write holds it")
        return writer.finalize()


# ------------------------------------------------------------------------------------------------- read


class GroupFeatures(Mapping):
    """The feature datasets of one group, loaded on access (`group_features["averaged_feature"]`)."""

    def __init__(self, group: h5py.Group):
        self._group = group
        self._names = [n for n, d in group.items() if isinstance(d, h5py.Dataset) and d.ndim == 2]

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        return self._group[name][()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def shape(self, name: str) -> tuple[int, int]:
        return tuple(self._group[name].shape)


@dataclass
class EmbeddingFile:
    """An opened embedding file: lazy features, labels (numpy string arrays per level) and sample ids.

    `features[group][dataset_name]` reads a dataset into memory; `dataset(group, name)` gives the h5py
    dataset for chunked reading. Close it (or use `with`) when done.
    """

    h5_path: Path
    labels_path: Path
    h5: h5py.File
    labels: dict[str, dict[str, np.ndarray]]
    sample_ids: dict[str, np.ndarray | None]
    features: dict[str, GroupFeatures] = field(default_factory=dict)

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self.features)

    def n_rows(self, group: str) -> int:
        """Rows of a group, from its labels."""
        return len(next(iter(self.labels[group].values()), ()))

    def has(self, group: str, feature: str) -> bool:
        return group in self.features and dataset_name(feature) in self.features[group]

    def dataset(self, group: str, feature: str) -> h5py.Dataset:
        """The h5py dataset of a feature (short or published name); DataError naming what exists if absent."""
        name = dataset_name(feature)
        if group not in self.features:
            raise DataError(
                self.h5_path,
                f"{self.h5_path.name} has no group {group!r} (groups: {', '.join(self.features) or 'none'})",
                "is this an extracted-embedding file? `bioclip embed` writes them",
            )
        if name not in self.features[group]:
            have = ", ".join(self.features[group]) or "none"
            raise DataError(
                self.h5_path,
                f"{self.h5_path.name}: group {group!r} has no dataset {name!r} (it has: {have})",
                "pick features that exist with --query/--key, or re-export the embeddings with `bioclip embed`",
            )
        return self.features[group]._group[name]

    def close(self) -> None:
        self.h5.close()

    def __enter__(self) -> EmbeddingFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def _read_labels(labels_path: Path, groups: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    try:
        raw = json.loads(labels_path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(labels_path, f"{labels_path} is not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise DataError(
            labels_path, f"{labels_path} must hold an object with seen_gt_dict, unseen_gt_dict, key_gt_dict"
        )
    out = {}
    for group in groups:
        key = label_key(group)
        if key not in raw:
            raise DataError(
                labels_path,
                f"{labels_path.name} has no {key!r} (keys: {', '.join(raw) or 'none'})",
                "use the labels_{split}.json written together with the embedding file",
            )
        rows = raw[key]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            found = type(rows).__name__ if not isinstance(rows, list) else "a list with non-object rows"
            raise DataError(
                labels_path,
                f"{labels_path.name}: {key!r} must be a list of rows ({{level: label}} objects), got {found}",
                "use the labels_{split}.json written together with the embedding file",
            )
        levels = list(rows[0]) if rows else list(LEVELS)
        try:
            out[group] = {
                level: np.array(["not_classified" if r[level] is None else str(r[level]) for r in rows], dtype=str)
                for level in levels
            }
        except KeyError as exc:
            raise DataError(
                labels_path,
                f"{labels_path.name}: a row of {key!r} lacks the level {exc} that its first row has",
                "use the labels_{split}.json written together with the embedding file",
            ) from None
        if not rows:
            out[group] = {level: np.array([], dtype=str) for level in levels}
    return out


def read_embedding_file(h5_path: str | Path, labels_path: str | Path) -> EmbeddingFile:
    """Open an extracted-embedding HDF5 and its labels JSON (ours or the released ones, float32 or float64).

    Checks the layout without reading the vectors: the seen and key groups exist (unseen may be absent or
    empty), and every feature dataset has one row per label row (all_key_features: a multiple of them).
    """
    h5_path, labels_path = Path(h5_path), Path(labels_path)
    for path, what in ((h5_path, "embedding file"), (labels_path, "labels file")):
        if not path.is_file():
            raise DataError(path, f"{what} {path} does not exist", "make it with `bioclip embed --run runs/NAME`")
    try:
        h5 = h5py.File(h5_path, "r")
    except OSError as exc:
        raise DataError(h5_path, f"{h5_path} is not a readable HDF5 file ({exc})") from None
    try:
        groups = [g for g in GROUPS if g in h5]
        for required in ("seen", "key"):
            if required not in groups:
                raise DataError(
                    h5_path,
                    f"{h5_path.name} has no group {required!r} (groups: {', '.join(h5.keys()) or 'none'})",
                    "is this an extracted_feature_from_{split}_split.hdf5 file?",
                )
        labels = _read_labels(labels_path, groups)
        features = {g: GroupFeatures(h5[g]) for g in groups}
        ids = {g: (h5[g][SAMPLE_IDS].asstr()[()] if SAMPLE_IDS in h5[g] else None) for g in groups}
        for g in groups:
            n = len(next(iter(labels[g].values()), ()))
            for name in features[g]:
                rows = features[g].shape(name)[0]
                stacked = name == "all_key_features" and n > 0 and rows % n == 0  # [m*N, d]: m blocks of keys
                if rows != n and not stacked:
                    raise DataError(
                        h5_path,
                        f"{h5_path.name}: {g}/{name} has {rows} rows but {labels_path.name} "
                        f"{label_key(g)!r} has {n} label rows",
                        "use the labels file written together with this embedding file",
                    )
            if ids[g] is not None and len(ids[g]) != n:
                raise DataError(h5_path, f"{h5_path.name}: {g}/{SAMPLE_IDS} has {len(ids[g])} rows, labels {n}")
    except BaseException:
        h5.close()
        raise
    return EmbeddingFile(h5_path, labels_path, h5, labels, ids, features)
