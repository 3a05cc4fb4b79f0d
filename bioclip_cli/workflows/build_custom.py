"""`build-hdf5 custom`: a specimen manifest (a lab's own photos and barcodes) -> the training HDF5 layout.

The manifest (:mod:`bioclip_cli.data.manifest`) gives each specimen an id, an image path, a barcode and its
taxonomy. Its groups come from its `split` column, mapped exactly as BIOSCAN-5M's splits
(`no_split_and_seen_train` = pretrain + train, `all_keys` = key_unseen + train, ...), or, without that column,
from a partition rule (`split_rule="1m"`: the BIOSCAN-1M rules with a seed, :mod:`bioclip_cli.data.partition_1m`).
The file has the same layout as the BIOSCAN builds (original JPEG bytes, fixed columns, `processid` = the
manifest id, optional stored text tokens), so every preset trains on it with `--set data.hdf5=F`.

Every bad row (missing or corrupt image, duplicate id, bad barcode characters, unknown split, a path
leaving the manifest's folder) is listed in ``OUT.report.json`` and left out; the file is written under a
temporary name and renamed only when complete, so a failed build leaves nothing behind.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bioclip_cli import __version__
from bioclip_cli.atomic_write import atomic_output, write_text
from bioclip_cli.data.build_raw import GROUPS_5M
from bioclip_cli.data.build_report import BuildReport
from bioclip_cli.data.hdf5_writer import BioscanH5Writer
from bioclip_cli.data.manifest import ManifestRow, read_manifest
from bioclip_cli.data.partition_1m import partition_1m
from bioclip_cli.data.raw_images import check_jpeg
from bioclip_cli.data.raw_problems import ProblemLog
from bioclip_cli.data.taxonomy import LEVELS, NOT_CLASSIFIED, load_text_tokenizer, taxonomy_strings, tokenize_taxonomy
from bioclip_cli.errors import BioclipError, DataError
from bioclip_cli.progress import progress_bar

SPLIT_RULES = ("1m",)
_BLOCK = 512  # rows appended to a group at a time


def assign_groups(rows: list[ManifestRow], split_rule: str | None, seed: int | None) -> dict[str, np.ndarray]:
    """Group name -> ascending indices into `rows`: from their `split` values (BIOSCAN-5M mapping), or drawn."""
    has_split = any(r.split for r in rows)
    if split_rule is not None:
        if split_rule not in SPLIT_RULES:
            raise BioclipError(f"unknown --split-rule {split_rule!r}", f"use one of: {', '.join(SPLIT_RULES)}")
        if has_split:
            raise BioclipError(
                "the manifest has a split column and --split-rule was given; use one or the other",
                "drop --split-rule to keep the manifest's splits, or remove its split column",
            )
        if seed is None:
            raise BioclipError("--split-rule 1m needs --seed S (the partition is drawn at random)", "e.g. --seed 0")
        return partition_1m([r.taxonomy["species"] for r in rows], seed)
    if not has_split:
        raise BioclipError(
            "the manifest has no split column: say how to split it",
            "add a split column (pretrain, train, val, test, key_unseen, val_unseen, test_unseen, other_heldout) "
            "or pass --split-rule 1m --seed 0",
        )
    splits = np.array([r.split for r in rows], dtype=object)
    return {g: np.flatnonzero(np.isin(splits, members)) for g, members in GROUPS_5M.items()}


def _read_images(rows: list[ManifestRow], log: ProblemLog, decode: bool) -> tuple[list[ManifestRow], dict]:
    """The rows whose image reads and checks as a JPEG, and their bytes by id (the others logged)."""
    good, data = [], {}
    with progress_bar(len(rows), "build-hdf5 custom: reading images", unit="images") as bar:
        for row in rows:
            if row.image is None:
                log.add("missing_image", row.id, "skipped", "no image path")
            else:
                try:
                    blob = row.image.read_bytes()
                except OSError as exc:
                    log.add("unreadable_image", row.id, "skipped", f"{row.image.name}: {exc.strerror}")
                    blob = None
                if blob is not None:
                    problem = check_jpeg(blob, decode=decode)
                    if problem is None:
                        good.append(row)
                        data[row.id] = blob
                    else:
                        log.add("bad_image", row.id, "skipped", f"{row.image.name}: {problem}")
            bar.advance(1)
    return good, data


def build_custom(
    manifest: str | Path,
    out: str | Path,
    *,
    split_rule: str | None = None,
    seed: int | None = None,
    text_tokenizer: str | None = None,
    text_max_len: int = 20,
    overwrite: bool = False,
    check_images: str = "markers",
) -> BuildReport:
    """Build the training HDF5 from a manifest; returns the report (also written to ``OUT.report.json``)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise DataError(out, f"{out} already exists; it is kept", "pass --overwrite to replace it")
    if check_images not in ("markers", "decode"):
        raise DataError(out, f"--check-images must be markers or decode, got {check_images!r}")
    tokenizer = load_text_tokenizer(text_tokenizer) if text_tokenizer else None  # fail before any work
    start = time.perf_counter()
    table = read_manifest(manifest, require=("image", "barcode"))
    report = BuildReport(out=str(out), dataset="custom", root=str(Path(manifest).parent))
    report.options = {"manifest": str(manifest), "split_rule": split_rule, "seed": seed,
                      "text_tokenizer": text_tokenizer, "check_images": check_images}  # fmt: skip
    report.metadata_rows = table.rows_read
    log = ProblemLog()
    for kind, sid, detail in table.problems:
        log.add(kind, sid, "skipped", detail)
    rows, images = _read_images(table.rows, log, check_images == "decode")
    for row in rows:
        if row.barcode is None:
            log.add("empty_barcode", row.id, "kept")
    if table.gap_rows:
        log.add_many("barcode_gaps_removed", [], "kept (gaps - . removed)", count=table.gap_rows)
    groups = assign_groups(rows, split_rule, seed)
    extra = table.extra_columns
    attrs = {"created_by": f"bioscan-clip {__version__}", "dataset": "custom", "source_root": report.root,
             "image_bytes": "original JPEG files", "text_tokenizer": text_tokenizer or "",
             "split_rule": split_rule or "split column", "seed": -1 if seed is None else int(seed)}  # fmt: skip
    total = sum(len(ix) for ix in groups.values())
    with atomic_output(out, needed=sum(len(b) for b in images.values())) as tmp:
        with BioscanH5Writer(tmp, attrs=attrs) as writer, progress_bar(total, "build-hdf5 custom", unit="rows") as bar:
            for name, index in groups.items():
                group = writer.group(name)
                group.create(list(_strings([], extra)), token_len=text_max_len if tokenizer else None,
                             rows_hint=len(index))  # fmt: skip
                for s in range(0, len(index), _BLOCK):
                    part = [rows[i] for i in index[s : s + _BLOCK]]
                    group.append(
                        _strings(part, extra),
                        images=[images[r.id] for r in part],
                        tokens=_tokens(part, tokenizer, text_max_len),
                    )
                    bar.advance(len(part))
    report.groups = {name: int(len(index)) for name, index in groups.items()}
    report.rows_written = len({i for index in groups.values() for i in index.tolist()})
    report.image_bytes = int(sum(len(images[rows[i].id]) for i in {i for ix in groups.values() for i in ix.tolist()}))
    report.missing_ranks = {
        level: n for level in LEVELS if (n := sum(r.taxonomy[level] == NOT_CLASSIFIED for r in rows))
    }
    report.problems = log.to_dict()
    report.seconds = round(time.perf_counter() - start, 3)
    report.rows_per_second = round(report.rows_written / report.seconds, 1) if report.seconds else 0.0
    write_text(report.report_path, report.to_json())
    return report


def _strings(rows: list[ManifestRow], extra: list[str]) -> dict[str, list[str]]:
    columns = {
        "barcode": [r.barcode or "" for r in rows],
        **{level: [r.taxonomy[level] for r in rows] for level in LEVELS},
        "sampleid": [r.id for r in rows],
        "processid": [r.id for r in rows],
        "image_file": [r.image.name if r.image else "" for r in rows],
    }
    for name in extra:
        columns[name] = [r.extra.get(name, "") for r in rows]
    return columns


def _tokens(rows: list[ManifestRow], tokenizer, max_len: int):
    if tokenizer is None:
        return None
    text = taxonomy_strings(*([r.taxonomy[level] for r in rows] for level in LEVELS))
    return tokenize_taxonomy(tokenizer, text, max_len)
