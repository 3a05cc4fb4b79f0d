"""`bioclip build-hdf5`: the raw BIOSCAN-1M/5M releases, the INSECT dataset, or a manifest of your own specimens
-> the training HDF5 layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from bioclip_cli.cli.options import FormatOpt, OutputOpt, examples

EXAMPLES = examples(
    "bioclip build-hdf5 5m --root data/ --out data/BIOSCAN_5M/BIOSCAN_5M.hdf5",
    "bioclip build-hdf5 5m --root data/ --out eval_only.hdf5 --splits val,val_unseen,key_unseen,train",
    "bioclip build-hdf5 5m --root data/ --out data/BIOSCAN_5M/BIOSCAN_5M.hdf5 --text-tokenizer prajjwal1/bert-small",
    "bioclip build-hdf5 5m --root data/ --out sample.hdf5 --splits val,val_unseen,key_unseen --format json",
    "bioclip build-hdf5 1m --root data/BIOSCAN_1M --out data/BIOSCAN_1M/split_data/BioScan_data_in_splits.hdf5",
    "bioclip build-hdf5 insect --root data/ --out data/INSECT/INSECT.hdf5",
    "bioclip build-hdf5 custom --manifest specimens.csv --out my_specimens.hdf5",
    "bioclip build-hdf5 custom --manifest specimens.csv --split-rule 1m --seed 0 --out my_specimens.hdf5",
)
NO_ARGS_IS_HELP = True


def command(
    dataset: Annotated[
        str,
        typer.Argument(
            help="What to build from: 5m, 1m (raw releases), insect (raw BZSL release or processed pair) or custom (a manifest).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HDF5 file to write.")],
    root: Annotated[
        Path | None,
        typer.Option(
            "--root", help="5m/1m/insect: folder holding the release (metadata + images).", show_default=False
        ),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            help="custom: CSV/TSV with id,image,barcode,order,family,genus,species[,split] (image paths relative to it).",
            show_default=False,
        ),
    ] = None,
    split_rule: Annotated[
        str | None,
        typer.Option(
            "--split-rule", help="custom without a split column: draw groups by these rules (1m).", show_default=False
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of --split-rule.", show_default=False)] = None,
    splits: Annotated[
        str | None,
        typer.Option(
            "--splits",
            help="Comma-separated metadata splits to include (5m: pretrain,train,val,test,key_unseen,val_unseen,"
            "test_unseen,other_heldout; 1m: group names). A group is written when all its splits are included.",
        ),
    ] = None,
    image_package: Annotated[
        Literal["cropped_256", "original_256", "cropped", "original_full"],
        typer.Option("--image-package", help="Image package folder."),
    ] = "cropped_256",
    text_tokenizer: Annotated[
        str | None,
        typer.Option(
            "--text-tokenizer",
            help="Store language_tokens_* made with this tokenizer (hub id, folder, or bioclip-sample).",
            show_default=False,
        ),
    ] = None,
    reencode_quality: Annotated[
        int | None,
        typer.Option(
            "--reencode-quality",
            help="Re-encode every image as JPEG of this quality (the upstream generator did); default: original bytes.",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
    on_bad_image: Annotated[
        Literal["skip", "fail"],
        typer.Option("--on-bad-image", help="skip (list it in the report) or fail at the first bad image."),
    ] = "skip",
    check_images: Annotated[
        Literal["markers", "decode"],
        typer.Option("--check-images", help="markers (fast: start/end markers) or decode (full decode)."),
    ] = "markers",
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Threads reading images while reading is slow (disk, network; default: CPUs, at most 8). "
            "With 2 or more (and 2+ CPUs), worker processes parse the metadata and read the images while this one "
            "writes; 1 does everything in one process.",
        ),
    ] = None,
    partition: Annotated[
        Path | None,
        typer.Option("--partition", help="1m only: folder of <group>.txt sampleid lists.", show_default=False),
    ] = None,
    format: FormatOpt = "table",
    output_file: OutputOpt = None,
) -> None:
    """Build the training HDF5 (published group layout) from the raw release.

    JPEG bytes are stored unchanged; bad rows are counted and listed in `<out>.report.json`. For insect,
    `<out>.metadata.csv` lists the rows stored (the INSECT_metadata.csv format, for BZSL).
    The file is written under a hidden partial name beside `<out>` and renamed when complete. The printed table
    (or --format json/csv) lists the rows written per group; JSON adds the bad-input summary.
    """
    from bioclip_cli.errors import BioclipError

    if dataset == "custom":
        from bioclip_cli.workflows.build_custom import build_custom

        if manifest is None:
            raise BioclipError(
                "build-hdf5 custom needs --manifest FILE", "bioclip build-hdf5 custom --manifest specimens.csv --out F"
            )
        report = build_custom(
            manifest, out, split_rule=split_rule, seed=seed, text_tokenizer=text_tokenizer,
            overwrite=overwrite, check_images=check_images,
        )  # fmt: skip
        _print_report(report, out, format, output_file)
        return
    if root is None:
        raise BioclipError(
            f"build-hdf5 {dataset} needs --root FOLDER (the raw release)",
            f"bioclip build-hdf5 {dataset} --root data/ --out F",
        )
    if manifest is not None or split_rule is not None:
        raise BioclipError("--manifest and --split-rule are for `build-hdf5 custom`")
    from bioclip_cli.workflows.build_hdf5 import build_hdf5

    report = build_hdf5(
        dataset,
        root,
        out,
        [s.strip() for s in splits.split(",") if s.strip()] if splits else None,
        partition=partition,
        image_package=image_package,
        text_tokenizer=text_tokenizer,
        reencode_quality=reencode_quality,
        overwrite=overwrite,
        on_bad_image=on_bad_image,
        check_images=check_images,
        workers=workers,
    )
    _print_report(report, out, format, output_file)


def _print_report(report, out: Path, format, output_file) -> None:
    from bioclip_cli.cli import output

    summary = {"out": str(out), "rows": report.rows_written, "groups": report.group_rows(),
               "problems": report.problem_rows(), "seconds": report.seconds, "report": str(report.report_path)}  # fmt: skip
    as_table = output.emit(
        report.group_rows(), format, output_file, title=f"{out} ({report.rows_written} specimens)", json_obj=summary
    )
    if report.problems and as_table:
        output.print_table(report.problem_rows(), title="bad input (ids in the report)")
    for message in report.warnings:
        output.warning(message)
    output.success(
        f"wrote {out} in {report.seconds:.1f} s ({report.rows_per_second:,.0f} rows/s); report: {report.report_path}"
    )
    output.hint(f"bioclip inspect {out}")
