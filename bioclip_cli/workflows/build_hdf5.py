"""`build-hdf5`: a raw BIOSCAN release -> the published HDF5 group layout (SPEC §4).

Streams the metadata in batches (never all rows in memory); a thread pool reads and checks the image
files of upcoming batches while the main thread writes the current one; each group's rows are appended
to chunked, resizable datasets. The original JPEG bytes are stored unchanged unless `reencode_quality`
is given. Output goes to ``OUT.partial`` and is renamed to ``OUT`` only when complete; every bad input is
counted and listed in ``OUT.report.json`` (nothing is dropped silently).
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bioclip_cli import __version__
from bioclip_cli.data.build_raw import (
    GROUPS_1M,
    SPLITS_5M,
    STRINGS_1M,
    STRINGS_5M,
    ProblemLog,
    RawRecord,
    Release1M,
    Release5M,
    barcode_problem,
    check_jpeg,
    groups_for_splits,
    read_file,
    reencode_jpeg,
)
from bioclip_cli.data.hdf5_writer import BioscanH5Writer
from bioclip_cli.data.taxonomy import LEVELS, NOT_CLASSIFIED, load_text_tokenizer, taxonomy_strings, tokenize_taxonomy
from bioclip_cli.errors import DataError
from bioclip_cli.progress import progress_bar

BATCH_ROWS = 256  # metadata rows per read/check task
FLUSH_ROWS = 2048  # rows buffered per group before an HDF5 append


@dataclass
class BuildReport:
    """What a build did: rows per group, bad inputs by kind (with ids), timing. Saved as ``OUT.report.json``."""

    out: str
    dataset: str
    root: str
    metadata_rows: int = 0
    rows_written: int = 0  # distinct records stored (a record may be in several groups)
    rows_not_selected: int = 0  # valid rows of splits/groups left out by --splits
    groups: dict[str, int] = field(default_factory=dict)
    groups_skipped: list[str] = field(default_factory=list)
    problems: dict[str, dict] = field(default_factory=dict)
    missing_ranks: dict[str, int] = field(default_factory=dict)  # rows stored with a rank -> not_classified
    image_bytes: int = 0
    seconds: float = 0.0
    rows_per_second: float = 0.0
    options: dict = field(default_factory=dict)

    @property
    def report_path(self) -> Path:
        return Path(self.out + ".report.json")

    def to_dict(self) -> dict:
        return asdict(self)

    def group_rows(self) -> list[dict]:
        return [{"group": g, "rows": n} for g, n in self.groups.items()]

    def problem_rows(self) -> list[dict]:
        return [
            {"problem": k, "rows": e["count"], "action": e["action"], "first ids": ", ".join(e["ids"][:3])}
            for k, e in self.problems.items()
        ]


def build_5m(
    root: str | Path,
    out: str | Path,
    splits: list[str] | None = None,
    *,
    image_package: str = "cropped_256",
    text_tokenizer: str | None = None,
    text_max_len: int = 20,
    reencode_quality: int | None = None,
    overwrite: bool = False,
    on_bad_image: str = "skip",
    check_images: str = "markers",
    workers: int | None = None,
) -> BuildReport:
    """Build the BIOSCAN-5M HDF5 from the raw release under `root` (groups of SPEC §4, 5M mapping).

    `splits` selects metadata splits; a group is written when all its source splits are selected.
    """
    out = Path(out)
    _check_out(out, overwrite)
    release = Release5M(root, image_package)
    groups = groups_for_splits(splits)
    split_groups: dict[str, list[str]] = defaultdict(list)
    for group, sources in groups.items():
        for split in sources:
            split_groups[split].append(group)
    selected = set(splits) if splits is not None else set(SPLITS_5M)

    def records(log: ProblemLog, report: BuildReport):
        seen: set[str] = set()
        targets = {split: tuple(split_groups[split]) for split in selected if split_groups.get(split)}
        make = release.make_record
        for cells in release.cells(release.table()):
            report.metadata_rows += 1
            pid = cells[0].strip()
            split = cells[1].strip()
            if not pid:
                log.add("missing_processid", f"line {report.metadata_rows + 1}", "skipped")
                yield None
                continue
            if pid in seen:
                log.add("duplicate_processid", pid, "kept the first row")
                yield None
                continue
            seen.add(pid)
            groups = targets.get(split)
            if groups is None:
                if split not in SPLITS_5M:
                    log.add("unknown_split", pid, "in no group", f"split={split!r}")
                else:
                    report.rows_not_selected += 1
                yield None
                continue
            yield make(cells, groups)

    report = BuildReport(out=str(out), dataset="5m", root=str(Path(root)))
    report.groups_skipped = [g for g in (groups_for_splits(None)) if g not in groups]
    return _build(
        records,
        list(groups),
        STRINGS_5M,
        out,
        report,
        total=release.count_rows(),
        text_tokenizer=text_tokenizer,
        text_max_len=text_max_len,
        reencode_quality=reencode_quality,
        on_bad_image=on_bad_image,
        check_images=check_images,
        workers=workers,
        options={"splits": splits, "image_package": image_package},
    )


def build_1m(
    root: str | Path,
    out: str | Path,
    splits: list[str] | None = None,
    *,
    partition: str | Path | None = None,
    image_package: str = "cropped_256",
    text_tokenizer: str | None = None,
    text_max_len: int = 20,
    reencode_quality: int | None = None,
    overwrite: bool = False,
    on_bad_image: str = "skip",
    check_images: str = "markers",
    workers: int | None = None,
) -> BuildReport:
    """Build the BIOSCAN-1M HDF5 from the metadata TSV, the `part{N}` images and the partition files.

    `splits` here names 1M groups (e.g. val_seen,val_unseen,all_keys); default: every partition file.
    """
    out = Path(out)
    _check_out(out, overwrite)
    release = Release1M(root, partition, image_package)
    if splits is not None:
        unknown = [g for g in splits if g not in GROUPS_1M]
        if unknown:
            raise DataError(
                release.partition,
                f"unknown BIOSCAN-1M group(s) {', '.join(unknown)}; the groups are: {', '.join(GROUPS_1M)}",
            )
    membership = release.partition_groups(splits)
    group_names = sorted({g for gs in membership.values() for g in gs}, key=_group_order)

    def records(log: ProblemLog, report: BuildReport):
        seen: set[str] = set()
        for row in release.rows():
            report.metadata_rows += 1
            sid = (row.get("sampleid") or "").strip()
            key = (row.get("image_file") or "").strip() or sid
            if key in seen:
                log.add("duplicate_image_file", key, "kept the first row")
                yield None
                continue
            seen.add(key)
            groups = membership.get(sid)
            if not groups:
                report.rows_not_selected += 1
                yield None
                continue
            yield release.record(row, tuple(groups))

    report = BuildReport(out=str(out), dataset="1m", root=str(Path(root)))
    return _build(
        records,
        group_names,
        STRINGS_1M,
        out,
        report,
        total=release.count_rows(),
        text_tokenizer=text_tokenizer,
        text_max_len=text_max_len,
        reencode_quality=reencode_quality,
        on_bad_image=on_bad_image,
        check_images=check_images,
        workers=workers,
        options={"splits": splits, "image_package": image_package, "partition": str(release.partition)},
    )


def _group_order(name: str) -> int:
    return GROUPS_1M.index(name) if name in GROUPS_1M else len(GROUPS_1M)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise DataError(out, f"{out} already exists; it is kept", "pass --overwrite to replace it")


def _load(paths: list[str], decode: bool, reencode_quality: int | None) -> list[tuple]:
    """Read and check a batch of image files (runs in a worker thread): (bytes, problem kind, detail)."""
    out = []
    for path in paths:
        try:
            data = read_file(path)
        except FileNotFoundError:
            out.append((None, "missing_image", path))
            continue
        except OSError as exc:
            out.append((None, "unreadable_image", f"{path}: {exc}"))
            continue
        problem = check_jpeg(data, decode=decode or reencode_quality is not None)
        if problem is not None:
            out.append((None, "bad_image", f"{problem}: {path}"))
            continue
        if reencode_quality is not None:
            data = reencode_jpeg(data, reencode_quality)
        out.append((data, None, None))
    return out


def _build(
    records,
    group_names: list[str],
    string_columns: tuple[str, ...],
    out: Path,
    report: BuildReport,
    *,
    total: int,
    text_tokenizer: str | None,
    text_max_len: int,
    reencode_quality: int | None,
    on_bad_image: str,
    check_images: str,
    workers: int | None,
    options: dict,
) -> BuildReport:
    if on_bad_image not in ("skip", "fail"):
        raise DataError(out, f"--on-bad-image must be skip or fail, got {on_bad_image!r}")
    if check_images not in ("markers", "decode"):
        raise DataError(out, f"--check-images must be markers or decode, got {check_images!r}")
    if reencode_quality is not None and not 1 <= reencode_quality <= 100:
        raise DataError(out, f"--reencode-quality must be in 1..100, got {reencode_quality}")
    tokenizer = load_text_tokenizer(text_tokenizer) if text_tokenizer else None  # fail before any work
    workers = max(1, workers or min(8, os.cpu_count() or 1))
    report.options = dict(
        options,
        text_tokenizer=text_tokenizer,
        reencode_quality=reencode_quality,
        on_bad_image=on_bad_image,
        check_images=check_images,
        workers=workers,
    )
    log = ProblemLog()
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    attrs = {
        "created_by": f"bioscan-clip {__version__}",
        "dataset": report.dataset,
        "source_root": report.root,
        "image_bytes": "original JPEG files" if reencode_quality is None else f"re-encoded, quality {reencode_quality}",
        "text_tokenizer": text_tokenizer or "",
    }
    start = time.perf_counter()
    buffers: dict[str, list[tuple[tuple[str, ...], bytes]]] = {g: [] for g in group_names}
    missing_ranks = dict.fromkeys(LEVELS, 0)
    decode = check_images == "decode"
    try:
        with (
            BioscanH5Writer(partial, attrs=attrs) as writer,
            ThreadPoolExecutor(workers) as pool,
            progress_bar(total, f"build-hdf5 {report.dataset}", unit="rows") as bar,
        ):
            for name in group_names:
                writer.group(name)
            pending: deque = deque()

            def flush(group: str) -> None:
                _flush(writer, group, buffers[group], string_columns, tokenizer, text_max_len)

            def consume() -> None:
                batch, future, n_rows = pending.popleft()
                loaded = future.result()
                _store(batch, loaded, buffers, writer, log, on_bad_image, missing_ranks, report, flush)
                bar.advance(n_rows)

            def submit(batch: list[RawRecord], n_rows: int) -> None:
                paths = [rec.image_path for rec in batch]
                pending.append((batch, pool.submit(_load, paths, decode, reencode_quality), n_rows))

            batch: list[RawRecord] = []
            n_rows = 0
            for rec in records(log, report):
                n_rows += 1
                if rec is not None:
                    batch.append(rec)
                if len(batch) >= BATCH_ROWS or n_rows >= 8 * BATCH_ROWS:
                    submit(batch, n_rows)
                    batch, n_rows = [], 0
                    while len(pending) > 2 * workers:
                        consume()
            submit(batch, n_rows)
            while pending:
                consume()
            for name in group_names:
                _flush(writer, name, buffers[name], string_columns, tokenizer, text_max_len)
                writer.group(name).create(string_columns, token_len=text_max_len if tokenizer else None)
            report.groups = {name: len(writer.group(name)) for name in group_names}
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    report.problems = log.to_dict()
    report.missing_ranks = {k: v for k, v in missing_ranks.items() if v}
    report.seconds = round(time.perf_counter() - start, 3)
    report.rows_per_second = round(report.rows_written / report.seconds, 1) if report.seconds else 0.0
    report.report_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def _store(batch, loaded, buffers, writer, log, on_bad_image, missing_ranks, report, flush) -> None:
    """Check a loaded batch, log its problems and queue its good rows in every group they belong to."""
    for rec, (data, kind, detail) in zip(batch, loaded):
        if kind is not None:
            if on_bad_image == "fail":
                raise DataError(rec.image_path, f"bad input for {rec.id}: {kind.replace('_', ' ')} ({detail})")
            log.add(kind, rec.id, "skipped", detail)
            continue
        values = rec.values  # barcode, order, family, genus, species, ...
        issue = barcode_problem(values[0])
        if issue:
            log.add(issue, rec.id, "kept", None if issue == "empty_barcode" else _odd_chars(values[0]))
        if NOT_CLASSIFIED in values[1:5]:
            absent = [level for level, value in zip(LEVELS, values[1:5]) if value == NOT_CLASSIFIED]
            for level in absent:
                missing_ranks[level] += 1
            log.add("missing_taxonomy", rec.id, "stored as not_classified", ",".join(absent))
        report.rows_written += 1
        report.image_bytes += len(data)
        row = (values, data)
        for group in rec.groups:
            buf = buffers[group]
            buf.append(row)
            if len(buf) >= FLUSH_ROWS:
                flush(group)


def _flush(writer, group: str, buf: list, names: tuple[str, ...], tokenizer, text_max_len: int) -> None:
    """Append the queued ``(values, image bytes)`` rows of one group as columns."""
    if not buf:
        return
    strings = dict(zip(names, zip(*(values for values, _ in buf))))
    images = [data for _, data in buf]
    tokens = None
    if tokenizer is not None:
        text = taxonomy_strings(*(strings[level] for level in LEVELS))
        tokens = tokenize_taxonomy(tokenizer, text, text_max_len)
    writer.group(group).append(strings, images=images, tokens=tokens)
    buf.clear()


def _odd_chars(seq: str) -> str:
    odd = sorted(set(seq) - set("ACGTN"))
    return "characters " + "".join(odd[:20])
