"""`build-hdf5`: a raw BIOSCAN release (or the INSECT dataset) -> the published HDF5 group layout
(docs/method.md, Data).

One quick pass over the metadata finds the widest value of each string column (the strings are stored
fixed-width, as in the published files); then the metadata is streamed in blocks of rows (never all rows
in memory), handled column-wise: the selection (splits, partition, duplicates) and the checks (barcode
characters, missing ranks) are done per block, not per row. Three processes work at once where there are
two CPUs or more (``workers`` > 1): one parses the metadata blocks, one reads and checks the image files
(an :class:`~bioclip_cli.data.build_raw.ImageReader`: by its own thread while files come from the page
cache, by a thread pool, ahead, while they are slow to read), and this one writes the file; they hand each
other the rows through shared memory (:mod:`~bioclip_cli.data.worker_stream`), a few parts ahead. Image
rows go straight into zero-padded chunks; the other columns are buffered per group and appended to chunked,
resizable datasets. The original JPEG bytes are stored unchanged unless `reencode_quality` is given. Output
goes to a hidden partial file beside ``OUT`` (a name unique to the process; ``.OUT.lock`` keeps a second build of
the same ``OUT`` out) and is renamed to ``OUT`` only when complete; every bad input is counted and listed
in ``OUT.report.json`` (nothing is dropped silently).

The INSECT dataset (:func:`build_insect`) is small enough for one process: the engine in
:mod:`bioclip_cli.data.insect_build` reads either of its releases and writes its groups through the same
writer, with the same report, plus ``OUT.metadata.csv`` (the rows stored, for the BZSL export).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from bioclip_cli import __version__
from bioclip_cli.atomic_write import describe_os_error, resolve_output, temporary_name, write_text
from bioclip_cli.data.build_raw import (
    GROUPS_1M,
    GROUPS_5M,
    ParsedBlock,
    RawBatch,
    Release1M,
    Release5M,
    groups_for_splits,
    with_images,
)
from bioclip_cli.data.build_report import BuildReport
from bioclip_cli.data.hdf5_writer import BioscanH5Writer
from bioclip_cli.data.raw_images import ImageReader
from bioclip_cli.data.raw_problems import ProblemLog
from bioclip_cli.data.taxonomy import LEVELS, load_text_tokenizer, taxonomy_strings, tokenize_taxonomy
from bioclip_cli.data.worker_stream import WorkerStream
from bioclip_cli.errors import BioclipError, DataError
from bioclip_cli.progress import progress_bar
from bioclip_cli.run_lock import exclusive_lock

PART_ROWS = 256  # image files per read/check task and per item from the worker process...
PART_BYTES = 8 << 20  # ...or about as many bytes of files (fewer rows when the files are large)
FLUSH_ROWS = 4096  # rows of strings buffered per group before an HDF5 append (images are written at once)
_ABSENT = [",".join(level for k, level in enumerate(LEVELS) if bits >> k & 1) for bits in range(16)]


def build_5m(root: str | Path, out: str | Path, splits: list[str] | None = None, **options) -> BuildReport:
    """Build the BIOSCAN-5M HDF5 from the raw release under `root` (groups: docs/method.md, Data).

    `splits` selects metadata splits; a group is written when all its source splits are selected.
    Options: those of :func:`build_hdf5`.
    """
    return build_hdf5("5m", root, out, splits, **options)


def build_1m(root: str | Path, out: str | Path, splits: list[str] | None = None, **options) -> BuildReport:
    """Build the BIOSCAN-1M HDF5 from the metadata TSV, the `part{N}` images and the partition files.

    `splits` here names 1M groups (e.g. val_seen,val_unseen,all_keys); default: every partition file.
    Options: those of :func:`build_hdf5` (``partition``: the folder of ``<group>.txt`` files).
    """
    return build_hdf5("1m", root, out, splits, **options)


def build_hdf5(
    release: str,
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
    """Build the HDF5 of `release` (``5m``, ``1m`` or ``insect``) from its files under `root` into `out`."""
    if release == "insect":
        unsupported = {"--splits": splits, "--partition": partition, "--reencode-quality": reencode_quality}
        unsupported["--image-package"] = None if image_package == "cropped_256" else image_package
        given = [flag for flag, value in unsupported.items() if value is not None]
        if given:
            raise BioclipError(f"{', '.join(given)} do(es) not apply to `build-hdf5 insect`")
        return build_insect(root, out, text_tokenizer=text_tokenizer, text_max_len=text_max_len,
                            overwrite=overwrite, on_bad_image=on_bad_image, check_images=check_images)  # fmt: skip
    if release not in ("5m", "1m"):
        raise BioclipError(
            f"unknown release {release!r}; choose 5m, 1m or insect", "bioclip build-hdf5 5m --root data/ --out F"
        )
    out = Path(out)
    _check_out(out, overwrite)
    report = BuildReport(out=str(out), dataset=release, root=str(Path(root)))
    options: dict = {"splits": splits, "image_package": image_package}
    if release == "5m":
        if partition is not None:
            raise DataError(
                partition, "--partition is for `build-hdf5 1m` (BIOSCAN-5M groups come from its split column)"
            )
        source = Release5M(root, image_package)
        groups = groups_for_splits(splits)
        group_names = list(groups)
        report.groups_skipped = [g for g in GROUPS_5M if g not in groups]

        parsed_blocks = source.parsed_blocks(groups)

        def batches(log: ProblemLog, parsed: Iterable[ParsedBlock]):
            return source.batches(groups, log, parsed)

    else:
        source = Release1M(root, partition, image_package)
        unknown = [g for g in splits or [] if g not in GROUPS_1M]
        if unknown:
            raise DataError(
                source.partition,
                f"unknown BIOSCAN-1M group(s) {', '.join(unknown)}; the groups are: {', '.join(GROUPS_1M)}",
            )
        membership = source.partition_groups(splits)
        group_names = sorted({g for gs in membership.values() for g in gs}, key=_group_order)
        options["partition"] = str(source.partition)

        parsed_blocks = source.parsed_blocks()

        def batches(log: ProblemLog, parsed: Iterable[ParsedBlock]):
            return source.batches(membership, group_names, log, parsed)

    lock = out.with_name(f".{out.name}.lock")  # one build per output at a time
    with exclusive_lock(lock, f"output {out}", "bioclip build-hdf5", hint="wait for that build, or use another --out"):
        _check_out(out, overwrite)  # again: another build may have finished it while we waited for nothing
        return _build(
            source,
            parsed_blocks,
            batches,
            group_names,
            out,
            report,
            text_tokenizer=text_tokenizer,
            text_max_len=text_max_len,
            reencode_quality=reencode_quality,
            on_bad_image=on_bad_image,
            check_images=check_images,
            workers=workers,
            options=options,
        )


def insect_metadata_path(out: str | Path) -> Path:
    """The `INSECT_metadata.csv` of the rows stored in an INSECT build `out`: ``OUT.metadata.csv``."""
    return Path(str(out) + ".metadata.csv")


def build_insect(
    root: str | Path,
    out: str | Path,
    *,
    text_tokenizer: str | None = None,
    text_max_len: int = 20,
    overwrite: bool = False,
    on_bad_image: str = "skip",
    check_images: str = "markers",
) -> BuildReport:
    """Build the INSECT HDF5 (groups of :data:`~bioclip_cli.data.insect_build.GROUPS_INSECT`) from the raw or
    the processed release under `root`; beside it ``OUT.metadata.csv`` (the rows stored, res101 order, in the
    processed release's format) and ``OUT.report.json``."""
    from bioclip_cli.data.insect_build import find_insect_source, table_rows, write_insect_groups
    from bioclip_cli.data.insect_table import write_insect_metadata

    out = Path(out)
    _check_out(out, overwrite)
    _check_options(out, on_bad_image, check_images, None)
    tokenizer = load_text_tokenizer(text_tokenizer) if text_tokenizer else None  # fail before any work
    source = find_insect_source(root)
    report = BuildReport(out=str(out), dataset="insect", root=str(Path(root)))
    report.options = {"source": source.kind, "source_folder": str(source.folder), "text_tokenizer": text_tokenizer,
                      "on_bad_image": on_bad_image, "check_images": check_images}  # fmt: skip
    report.metadata_rows = len(source.table)
    attrs = {"created_by": f"bioscan-clip {__version__}", "dataset": "insect", "source_root": report.root,
             "source": source.describe(), "image_bytes": "original JPEG files", "text_tokenizer": text_tokenizer or ""}  # fmt: skip
    log = ProblemLog()
    target = resolve_output(out)  # a link is followed; a folder or device is refused before any work
    partial = temporary_name(target, "partial")  # unique to this process: no other build can delete it
    start = time.perf_counter()
    try:
        with progress_bar(len(source.table), "build-hdf5 insect", unit="rows") as bar:
            with BioscanH5Writer(partial, attrs=attrs) as writer:
                stored = write_insect_groups(source, writer, log, tokenizer=tokenizer, text_max_len=text_max_len,
                                             decode=check_images == "decode", on_bad_image=on_bad_image,
                                             progress=bar.advance)  # fmt: skip
        write_insect_metadata(table_rows(source.table, stored.kept), insect_metadata_path(out))
        os.replace(partial, target)
    except OSError as exc:  # e.g. the disk filled up: one sentence naming the file, no partial left
        partial.unlink(missing_ok=True)
        raise describe_os_error(exc, out) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    report.groups = stored.groups
    report.rows_written = len(stored.kept)
    report.rows_not_selected = stored.not_selected
    report.image_bytes = stored.image_bytes
    report.missing_ranks = stored.missing_ranks
    report.problems = log.to_dict()
    report.seconds = round(time.perf_counter() - start, 3)
    report.rows_per_second = round(report.rows_written / report.seconds, 1) if report.seconds else 0.0
    write_text(report.report_path, report.to_json())
    return report


def _check_options(out: Path, on_bad_image: str, check_images: str, reencode_quality: int | None) -> None:
    if on_bad_image not in ("skip", "fail"):
        raise DataError(out, f"--on-bad-image must be skip or fail, got {on_bad_image!r}")
    if check_images not in ("markers", "decode"):
        raise DataError(out, f"--check-images must be markers or decode, got {check_images!r}")
    if reencode_quality is not None and not 1 <= reencode_quality <= 100:
        raise DataError(out, f"--reencode-quality must be in 1..100, got {reencode_quality}")


def _group_order(name: str) -> int:
    return GROUPS_1M.index(name) if name in GROUPS_1M else len(GROUPS_1M)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise DataError(out, f"{out} already exists; it is kept", "pass --overwrite to replace it")


class _GroupBuffer:
    """The string columns of one group's rows waiting for an HDF5 append (pieces of byte-string arrays); their
    images go to the file at once."""

    def __init__(self, n_columns: int):
        self.columns: list[list[np.ndarray]] = [[] for _ in range(n_columns)]
        self.rows = 0

    def extend(self, columns: list[np.ndarray], rows: np.ndarray) -> None:
        whole = len(rows) == len(columns[0])  # (rows are ascending and distinct)
        for buf, column in zip(self.columns, columns):
            buf.append(column if whole else column[rows])
        self.rows += len(rows)

    def strings(self) -> list[np.ndarray]:
        """Each column's pieces as one array (as wide as its widest piece)."""
        return [parts[0] if len(parts) == 1 else np.concatenate(parts) for parts in self.columns]

    def full(self) -> bool:
        return self.rows >= FLUSH_ROWS

    def clear(self) -> None:
        for buf in self.columns:
            buf.clear()
        self.rows = 0


def _build(
    source: Release5M | Release1M,
    parsed_blocks,
    batches,
    group_names: list[str],
    out: Path,
    report: BuildReport,
    *,
    text_tokenizer: str | None,
    text_max_len: int,
    reencode_quality: int | None,
    on_bad_image: str,
    check_images: str,
    workers: int | None,
    options: dict,
) -> BuildReport:
    _check_options(out, on_bad_image, check_images, reencode_quality)
    tokenizer = load_text_tokenizer(text_tokenizer) if text_tokenizer else None  # fail before any work
    workers = max(1, workers or min(8, os.cpu_count() or 1))
    parse_in_worker = workers > 1 and (os.cpu_count() or 1) > 1
    report.options = dict(
        options,
        text_tokenizer=text_tokenizer,
        reencode_quality=reencode_quality,
        on_bad_image=on_bad_image,
        check_images=check_images,
        workers=workers,
    )
    log = ProblemLog()
    target = resolve_output(out)  # a link is followed; a folder or device is refused before any work
    partial = temporary_name(target, "partial")  # unique to this process: no other build can delete it
    # under the output's lock no other build is writing it: partial files left here are a crashed build's
    for stale in (out.with_name(out.name + ".partial"), *target.parent.glob(f".{target.name}.*.partial")):
        stale.unlink(missing_ok=True)
    attrs = {
        "created_by": f"bioscan-clip {__version__}",
        "dataset": report.dataset,
        "source_root": report.root,
        "image_bytes": "original JPEG files" if reencode_quality is None else f"re-encoded, quality {reencode_quality}",
        "text_tokenizer": text_tokenizer or "",
    }
    start = time.perf_counter()
    size = source.metadata.stat().st_size
    try:

        def produce() -> Iterator[ParsedBlock]:  # what the worker process runs
            with (
                WorkerStream(parsed_blocks, enabled=parse_in_worker) as blocks,  # and a worker of its own parses
                ImageReader(workers, check_images == "decode", reencode_quality) as reader,
            ):
                yield from with_images(blocks, reader, PART_ROWS, PART_BYTES, ahead=workers)

        # a worker process (forked first: before any thread or HDF5 file) parses the metadata and reads the
        # images, ahead of this one, which writes the file
        slots = max(8, workers + 2)  # more than the parts the reader has in hand at once (`ahead`), or it waits forever
        with WorkerStream(
            produce, enabled=parse_in_worker, slots=slots, slot_bytes=max(16 << 20, 2 * PART_BYTES)
        ) as parsed:
            with progress_bar(size, f"build-hdf5 {report.dataset}: scanning the metadata", unit="B") as bar:
                total, widths = source.scan(bar.advance)  # the widest strings: stored fixed-width
            _write_groups(
                batches(log, parsed),
                total,
                source.strings,
                group_names,
                BioscanH5Writer(partial, attrs=attrs, string_widths=widths),
                report,
                log,
                tokenizer=tokenizer,
                text_max_len=text_max_len,
                on_bad_image=on_bad_image,
            )
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, target)
    except OSError as exc:  # e.g. the disk filled up: one sentence naming the file, no partial left
        partial.unlink(missing_ok=True)
        raise describe_os_error(exc, out) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    report.problems = log.to_dict()
    report.seconds = round(time.perf_counter() - start, 3)
    report.rows_per_second = round(report.rows_written / report.seconds, 1) if report.seconds else 0.0
    if report.rows_written == 0:
        report.warnings.append(
            f"no rows were written: every group of {out} is empty ({report.metadata_rows} metadata row(s) read)"
        )
    write_text(report.report_path, report.to_json())
    return report


def _write_groups(
    batches: Iterator[RawBatch],
    total: int,
    string_columns: tuple[str, ...],
    group_names: list[str],
    writer: BioscanH5Writer,
    report: BuildReport,
    log: ProblemLog,
    *,
    tokenizer,
    text_max_len: int,
    on_bad_image: str,
) -> None:
    """Write the rows of every batch (`total` metadata rows) into their groups, logging its bad inputs; closes
    `writer` (the body of :func:`_build`)."""
    buffers = {g: _GroupBuffer(len(string_columns)) for g in group_names}
    missing_ranks = np.zeros(len(LEVELS), dtype=np.int64)
    token_len = text_max_len if tokenizer is not None else None
    longest = 1
    with writer, progress_bar(total, f"build-hdf5 {report.dataset}", unit="rows") as bar:
        for name in group_names:
            writer.group(name)

        def flush(group: str) -> None:
            buf, out = buffers[group], writer.group(group)
            strings = dict(zip(string_columns, buf.strings()))
            tokens = None
            if tokenizer is not None:
                text = taxonomy_strings(*(np.char.decode(strings[level], "utf-8") for level in LEVELS))
                tokens = tokenize_taxonomy(tokenizer, text, text_max_len)
            out.append_rows(strings, tokens=tokens)
            buf.clear()

        for batch in batches:
            report.metadata_rows += batch.rows_read
            report.rows_not_selected += batch.not_selected
            good = _image_problems(batch, log, on_bad_image)
            batch = batch.subset(good)
            if len(batch):  # the longest image so far sets the chunk width of the groups made from now on
                longest = max(longest, int((batch.image_ends - batch.image_starts).max()))
            for group, rows in batch.groups.items():
                if len(rows):
                    writer.group(group).create(string_columns, image_width=longest, token_len=token_len)
            _store(batch, buffers, writer, log, missing_ranks, report, flush)
            bar.advance(batch.rows_read)
        for name in group_names:
            if buffers[name].rows:
                flush(name)
            writer.group(name).create(string_columns, token_len=token_len, rows_hint=0)  # (if it got no rows)
        report.groups = {name: len(writer.group(name)) for name in group_names}
    report.missing_ranks = {level: int(n) for level, n in zip(LEVELS, missing_ranks) if n}


def _image_problems(batch: RawBatch, log: ProblemLog, on_bad_image: str) -> np.ndarray:
    """Log the image problems of a batch (or fail at the first); the indices of its good rows."""
    good = np.ones(len(batch), dtype=bool)
    for i, kind, detail in batch.image_problems:
        if on_bad_image == "fail":
            raise DataError(
                os.fsdecode(batch.paths[i]), f"bad input for {batch.id(i)}: {kind.replace('_', ' ')} ({detail})"
            )
        log.add(kind, batch.id(i), "skipped", detail)
        good[i] = False
    return np.flatnonzero(good)


def _store(batch: RawBatch, buffers, writer, log, missing_ranks, report, flush) -> None:
    """Log the rows' barcode and rank issues (the rows are kept), write their images into their groups and queue
    their strings."""
    for i, kind, detail in batch.barcode_issues:
        log.add(kind, batch.id(i), "kept", detail)
    bits = batch.rank_bits
    absent = np.flatnonzero(bits)
    if len(absent):
        for k in range(len(LEVELS)):
            missing_ranks[k] += int(np.count_nonzero(bits[absent] >> k & 1))
        listed = absent[: log.room("missing_taxonomy")]  # ids beyond the report's cap are only counted
        log.add_many(
            "missing_taxonomy",
            np.char.decode(batch.ids[listed], "utf-8").tolist(),
            "stored as not_classified",
            [_ABSENT[b] for b in bits[listed].tolist()],
            count=len(absent),
        )
    report.rows_written += len(batch)
    report.image_bytes += int((batch.image_ends - batch.image_starts).sum())
    for group, rows in batch.groups.items():
        if len(rows):
            starts, ends = batch.image_starts[rows], batch.image_ends[rows]
            writer.group(group).append_images(batch.image_data, starts, ends)
            buf = buffers[group]
            buf.extend(batch.columns, rows)
            if buf.full():
                flush(group)
