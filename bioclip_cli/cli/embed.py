"""`bioclip embed`: export embeddings of a dataset's groups (published or per-split layout), or of your own
photographs, barcodes and manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from bioclip_cli.cli.options import (
    CheckpointOpt,
    ConfigOpt,
    OutDirOpt,
    OutputOpt,
    PresetOpt,
    RunOpt,
    SetOpt,
    SplitOpt,
    WhichOpt,
    examples,
)

EXAMPLES = examples(
    "bioclip embed --run runs/idt-5m",
    "bioclip embed --checkpoint ckpt/bioscan_clip/trained_with_bioscan_5m/image_dna_text.pth --preset idt-5m",
    "bioclip embed --preset none-5m --split test --out runs/none-5m",
    "accelerate launch --num_processes 4 -m bioclip_cli embed --run runs/idt-5m --dtype float64",
    "bioclip embed --run runs/demo --images photos/ --out photos.h5",
    "bioclip embed --run runs/demo --manifest specimens.csv --out specimens.parquet --format parquet",
    "bioclip embed --run runs/demo --fasta barcodes.fasta --out barcodes.npz --format npy",
    "bioclip embed --run runs/idt-1m --per-split",
    "bioclip embed --run runs/idt-insect --format bzsl-csv",
)


def command(
    run: RunOpt = None,
    checkpoint: CheckpointOpt = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    split: SplitOpt = "val",
    out: OutDirOpt = None,
    which: WhichOpt = "best",
    dtype: Annotated[
        Literal["float32", "float64"] | None,
        typer.Option(
            "--dtype",
            help="float32, or float64 (as the released files). Default: eval.dtype (float32).",
            show_default=False,
        ),
    ] = None,
    images: Annotated[
        list[str] | None,
        typer.Option(
            "--images",
            help="Photographs: files, folders (searched recursively) or globs (repeatable).",
            show_default=False,
        ),
    ] = None,
    fasta: Annotated[
        Path | None, typer.Option("--fasta", help="Barcodes: a FASTA file (ids from its headers).", show_default=False)
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            help="A CSV/TSV of specimens (id,image,barcode,order,family,genus,species).",
            show_default=False,
        ),
    ] = None,
    per_split: Annotated[
        bool,
        typer.Option("--per-split", help="Every group of the dataset, one extracted_features_of_{group}.hdf5 each."),
    ] = False,
    format: Annotated[
        Literal["table", "json", "csv", "hdf5", "npy", "parquet", "bzsl-csv"],
        typer.Option(
            "--format",
            "-f",
            help="How the summary prints: table, json or csv (stdout, or --output). With --images/--fasta/--manifest "
            "also the file written to --out: hdf5 (default), npy (a numpy .npz archive) or parquet. bzsl-csv (an "
            "INSECT run): every row's image embedding and each species' mean DNA embedding "
            "(OUT/embeddings/insect_embeddings.hdf5) and the CSV files BZSL reads (OUT/embeddings/bzsl/).",
        ),
    ] = "table",
    output_file: OutputOpt = None,
) -> None:
    """Encode the query groups and all_keys with every modality of the model; write the published HDF5 + labels JSON.

    The files go to OUT/embeddings/ (OUT: the run directory, or runs/NAME for a checkpoint or a preset), so
    that `bioclip eval --run OUT` finds them. A rerun with the same weights skips the groups already written.
    """
    from bioclip_cli.cli import output
    from bioclip_cli.workflows.embed import embed, embed_insect, plan_embedding

    specimens_given = bool(images) or fasta is not None or manifest is not None
    plan = plan_embedding(
        run=run, checkpoint=checkpoint, preset=preset, files=config or [], sets=set_ or [], which=which,
        out=None if specimens_given else out,
    )  # fmt: skip
    if format == "bzsl-csv":
        if specimens_given or per_split:
            from bioclip_cli.errors import BioclipError

            raise BioclipError("--format bzsl-csv exports an INSECT run's dataset; it takes no --images/--fasta/"
                               "--manifest/--per-split", "bioclip embed --run runs/idt-insect --format bzsl-csv")  # fmt: skip
        done = embed_insect(plan)
        if done.is_main:
            rows = [{"file": str(f)} for f in done.files]
            output.emit(rows, "table", output_file, title=f"INSECT embeddings of {plan.description}: {done.rows} "
                        f"rows, {done.classes} classes")  # fmt: skip
            output.hint(f"bioclip zsl --run {plan.out}")
        return
    if specimens_given:
        _embed_specimens(plan, images, fasta, manifest, out, format if format in ("npy", "parquet") else "hdf5")
        return
    if format in ("hdf5", "npy", "parquet"):
        from bioclip_cli.errors import BioclipError

        raise BioclipError(f"--format {format} is for --images/--fasta/--manifest", "use --format table, json or csv")
    if per_split:
        from bioclip_cli.workflows.embed import embed_per_split

        done = embed_per_split(plan, out, dtype=dtype or "float64")
        output.print_table(
            [{"group": g, "rows": n} for g, n in done.files.items()], title=f"per-split files in {done.out}"
        )
        return
    result = embed(plan, split=split, dtype=dtype)
    if not result.is_main:
        return
    rows = [
        {"role": role, "group": result.groups[role], "rows": result.rows[role],
         "status": "encoded" if role in result.encoded else "already complete"}
        for role in ("seen", "unseen", "key")
    ]  # fmt: skip
    output.emit(
        rows,
        format,
        output_file,
        title=f"{result.split} embeddings of {plan.description}",
        json_obj={"split": result.split, "model": plan.description, "embeddings": str(result.h5_path),
                  "labels": str(result.labels_path), "groups": rows},
    )  # fmt: skip
    if result.encoded:
        output.success(
            f"wrote {result.h5_path} and {result.labels_path.name} "
            f"({result.rows_per_second:,.1f} rows/s over {sum(result.rows[r] for r in result.encoded)} rows)"
        )
    else:
        output.info(f"{result.h5_path} is already complete for this model; nothing to do")
    flag = "" if split == "val" else f" --split {split}"
    output.hint(f"bioclip eval --run {result.out}{flag}")


def _embed_specimens(plan, images, fasta, manifest, out, file_format) -> None:
    from bioclip_cli.cli import output
    from bioclip_cli.data.specimen_inputs import collect_specimens
    from bioclip_cli.errors import BioclipError
    from bioclip_cli.workflows.embed import embed_specimens

    if out is None:
        raise BioclipError("--out FILE is needed with --images/--fasta/--manifest", "e.g. --out specimens.h5")
    specimens, problems = collect_specimens(images or [], fasta, manifest)
    result = embed_specimens(plan, specimens, out, fmt=file_format, problems=problems)
    rows = [{"feature": name, "specimens": n} for name, n in result.features.items()]
    output.print_table(rows, title=f"{result.rows} specimens embedded by {plan.description}")
    for sid, why in result.failed:
        output.warning(f"{sid}: {why}")
    for kind, sid, detail in result.problems:
        output.warning(f"{sid}: {kind.replace('_', ' ')} ({detail})")
    output.success(f"wrote {result.out}")
    output.hint(f"bioclip library build --from {result.out} --out library.h5")
