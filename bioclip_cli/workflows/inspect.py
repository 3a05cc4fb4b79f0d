"""`inspect`: summarise a dataset HDF5 (published layout) or an extracted-embedding HDF5.

- Dataset: per group rows, distinct species and genera, JPEG size stats, padded width, barcode length
  stats, stored language tokens; checks that every group's datasets are equally long and the
  seen/unseen sanity checks (unseen query species among the seen keys, query species missing from keys).
- Embedding file (groups ``seen``/``unseen``/``key``): per dataset shape, dtype, L2 norms, NaN count.

:func:`inspect_file` returns one dict (what ``--json`` writes); its ``groups`` and ``checks`` lists are
the rows of the tables the command prints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bioclip_cli.data.hdf5 import BioscanH5, GroupReader
from bioclip_cli.data.taxonomy import NOT_CLASSIFIED
from bioclip_cli.errors import DataError

EMBEDDING_GROUPS = ("seen", "unseen", "key")
BARCODE_SAMPLE = 100_000  # barcode length stats use at most this many rows (evenly spaced)
_BLOCK = 65536
# (query group, key group, what must hold) for the seen/unseen sanity checks
_DISJOINT = [("val_unseen", "seen_keys"), ("test_unseen", "seen_keys")]
_COVERED = [
    ("val_seen", "all_keys"),
    ("test_seen", "all_keys"),
    ("val_unseen", "all_keys"),
    ("test_unseen", "all_keys"),
]


def inspect_file(path: str | Path) -> dict:
    """Summary of a dataset or embedding HDF5 (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(path, f"{path} is a folder, not an HDF5 file", "give the path of a .hdf5 file inside it")
    h5 = BioscanH5(path)
    try:
        names = h5.group_names()
        if names and set(EMBEDDING_GROUPS) & set(names) and not any(_is_dataset_group(h5.group(n)) for n in names):
            result = _inspect_embeddings(h5, names)
        else:
            result = _inspect_dataset(h5, names)
    finally:
        h5.close()
    result["path"] = str(path)
    result["size_bytes"] = path.stat().st_size
    result["warnings"] = [c["detail"] for c in result["checks"] if c["status"] == "warning"]
    return result


def _is_dataset_group(group: GroupReader) -> bool:
    return any(group.has(n) for n in ("image", "barcode", "species"))


def _inspect_dataset(h5: BioscanH5, names: list[str]) -> dict:
    if not names:
        raise DataError(h5.path, f"{h5.path} holds no groups; it is not a BIOSCAN dataset or embedding file")
    rows, checks, species = [], [], {}
    for name in names:
        group = h5.group(name)
        row, group_species = _dataset_group_row(group)
        rows.append(row)
        species[name] = group_species
        if row["rows"] == 0:
            checks.append(_check("rows", name, False, f"group {name} is empty (0 rows)"))
        lengths = {ds: int(group.dataset(ds).shape[0]) for ds in group.names()}
        if len(set(lengths.values())) > 1:
            checks.append(_check("equal lengths", name, False, f"group {name}: datasets differ in length: {lengths}"))
    for query, key in _DISJOINT:
        if query in species and key in species:
            leaked = sorted(species[query] & species[key])
            detail = (
                f"{len(leaked)} {query} species are among the {key} species (e.g. {', '.join(leaked[:3])})"
                if leaked
                else f"no {query} species is among the {key}"
            )
            checks.append(_check("unseen species not in seen keys", query, not leaked, detail))
    for query, key in _COVERED:
        if query in species and key in species:
            missing = sorted(species[query] - species[key])
            detail = (
                f"{len(missing)} of {len(species[query])} {query} species are missing from {key} "
                f"(e.g. {', '.join(missing[:3])})"
                if missing
                else f"all {len(species[query])} {query} species are among the {key}"
            )
            checks.append(_check("query species among keys", query, not missing, detail))
    return {"kind": "dataset", "groups": rows, "checks": checks}


def _dataset_group_row(group: GroupReader) -> tuple[dict, set[str]]:
    n = len(group)
    row: dict = {"group": group.name, "rows": n}
    species: set[str] = set()
    genera: set[str] = set()
    for level, bucket in (("species", species), ("genus", genera)):
        if group.has(level):
            for lo in range(0, n, _BLOCK):  # block by block: bounded memory on multi-million-row groups
                bucket.update(group.strings(level, np.arange(lo, min(n, lo + _BLOCK))).tolist())
            bucket.discard(NOT_CLASSIFIED)
            bucket.discard("")
    row["species"] = len(species) if group.has("species") else None
    row["genera"] = len(genera) if group.has("genus") else None
    if group.has("image_mask") and n:
        sizes = group.image_lengths()
        row.update(jpeg_min=int(sizes.min()), jpeg_mean=round(float(sizes.mean()), 1), jpeg_max=int(sizes.max()))
        row["image_width"] = group.image_width if group.has("image") else None
    if group.has("barcode") and n:
        rows = np.unique(np.linspace(0, n - 1, min(n, BARCODE_SAMPLE)).astype(np.int64))
        lengths = np.fromiter((len(s) for s in group.barcodes(rows)), dtype=np.int64, count=len(rows))
        row.update(
            barcode_min=int(lengths.min()),
            barcode_median=float(np.median(lengths)),
            barcode_max=int(lengths.max()),
            barcode_empty=int((lengths == 0).sum()),
            barcode_rows_read=len(rows),
        )
    row["language_tokens"] = group.has_language_tokens()
    row["id_column"] = group.id_column if (group.has("processid") or group.has("image_file")) else None
    return row, species


def _inspect_embeddings(h5: BioscanH5, names: list[str]) -> dict:
    rows, checks = [], []
    file = h5.file
    for name in names:
        for ds_name, ds in sorted(file[name].items()):
            if not hasattr(ds, "shape"):
                continue
            row = {"group": name, "dataset": ds_name, "shape": "x".join(map(str, ds.shape)), "dtype": str(ds.dtype)}
            if ds.dtype.kind == "f" and len(ds.shape) == 2 and ds.shape[0]:
                norms, nans = [], 0
                for lo in range(0, ds.shape[0], _BLOCK):
                    block = np.asarray(ds[lo : lo + _BLOCK], dtype=np.float64)
                    nans += int(np.isnan(block).sum())
                    norms.append(np.linalg.norm(np.nan_to_num(block), axis=1))
                norms = np.concatenate(norms)
                row.update(
                    norm_min=round(float(norms.min()), 6),
                    norm_mean=round(float(norms.mean()), 6),
                    norm_max=round(float(norms.max()), 6),
                    nan=nans,
                )
                if nans:
                    checks.append(
                        _check("no NaN", f"{name}/{ds_name}", False, f"{name}/{ds_name} has {nans} NaN values")
                    )
            rows.append(row)
        lengths = {k: v.shape[0] for k, v in file[name].items() if hasattr(v, "shape") and k != "all_key_features"}
        if len(set(lengths.values())) > 1:
            checks.append(_check("equal lengths", name, False, f"group {name}: datasets differ in rows: {lengths}"))
    missing = [g for g in EMBEDDING_GROUPS if g not in names]
    checks.append(
        _check(
            "groups seen/unseen/key",
            "file",
            not missing,
            f"missing group(s): {', '.join(missing)}" if missing else "all three groups present",
        )
    )
    return {"kind": "embedding", "groups": rows, "checks": checks}


def _check(check: str, where: str, ok: bool, detail: str) -> dict:
    return {"check": check, "where": where, "status": "ok" if ok else "warning", "detail": detail}
