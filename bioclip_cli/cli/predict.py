"""`bioclip predict`: identify new specimens against a run's key embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from bioclip_cli.cli.options import DeviceOpt, FormatOpt, OutputOpt, RunOpt, WhichOpt, examples

EXAMPLES = examples(
    "bioclip predict specimen.jpg --run runs/demo",
    "bioclip predict a.jpg b.jpg --run runs/idt-5m --k 5 --format csv --output predictions.csv",
    "bioclip predict --dna-fasta barcodes.fasta --run runs/idt-5m --format json",
    "bioclip predict photo.jpg --dna ACGT... --run runs/idt-5m   # photograph + its barcode, averaged",
    "bioclip predict photos/ --run runs/demo --keys library.h5 --log provenance.json",
    "bioclip predict --manifest specimens.csv --run runs/demo --format csv --output ids.csv",
    "bioclip predict specimen.jpg --run runs/idt-5m --novelty auto   # say which levels look new",
)


def _table(result) -> None:
    from bioclip_cli.cli import output
    from bioclip_cli.config.schema import LEVELS

    for p in result.predictions:
        if not p.ok:
            continue
        rows = [{"rank": n["rank"], "similarity": n["similarity"], "sample id": n["sample_id"],
                 **{lv: n.get(lv) for lv in LEVELS}} for n in p.neighbors]  # fmt: skip
        votes = {lv: f"{c['label']} ({c['votes']}/{len(p.neighbors)})" for lv, c in p.consensus.items()}
        rows.append({"rank": "", "similarity": "", "sample id": "consensus (votes)", **votes})
        output.print_table(rows, title=f"{p.input}  ({p.query} query vs {p.key} keys)")
        if p.novelty:
            from bioclip_cli.workflows.predict import novelty_summary

            output.console.print(f"{p.input}: {novelty_summary(p)}", markup=False, highlight=False)
        for note in p.notes:
            output.warning(f"{p.input}: {note}")


def command(
    images: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Specimen photographs: files, folders (searched recursively) or globs.", show_default=False
        ),
    ] = None,
    run: RunOpt = None,
    dna: Annotated[
        list[str] | None, typer.Option("--dna", help="A DNA barcode (repeatable).", show_default=False)
    ] = None,
    dna_fasta: Annotated[
        Path | None, typer.Option("--dna-fasta", help="FASTA file of barcodes.", show_default=False)
    ] = None,
    k: Annotated[int, typer.Option("--k", help="Nearest reference specimens to show.")] = 5,
    key: Annotated[
        Literal["auto", "image", "dna", "text", "avg", "all"],
        typer.Option("--key", help="Key embeddings to search; auto: image->image, DNA->DNA, both->averaged."),
    ] = "auto",
    format: FormatOpt = "table",
    output_file: OutputOpt = None,
    device: DeviceOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Inputs embedded per batch.")] = 32,
    which: WhichOpt = "best",
    novelty: Annotated[
        str,
        typer.Option(
            "--novelty",
            help="New-taxon calls per level: auto (thresholds calibrated on the run's validation split, kept in "
            "RUN/results/novelty.json), off, or one similarity threshold.",
        ),
    ] = "off",
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="CSV/TSV pairing photographs and barcodes by id.", show_default=False),
    ] = None,
    keys: Annotated[
        Path | None,
        typer.Option(
            "--keys",
            help="Search this reference library (bioclip library build) or embedding file instead of the run's keys.",
            show_default=False,
        ),
    ] = None,
    index: Annotated[
        Literal["auto", "flat", "ivf"],
        typer.Option("--index", help="With --keys: exact (flat), approximate (ivf), or auto (by library size)."),
    ] = "auto",
    log: Annotated[
        Path | None,
        typer.Option(
            "--log",
            help="Write a provenance record (versions, model and library, time, arguments).",
            show_default=False,
        ),  # fmt: skip
    ] = None,
) -> None:
    """Embed photographs and/or barcodes with a run's model and list the k nearest reference specimens of its keys.

    With photographs and barcodes together, the i-th barcode belongs to the i-th photograph and the query is
    their averaged embedding. The consensus label per level is the majority among the k neighbours
    (not_classified neighbours do not vote; ties go to the larger summed similarity, then the nearer one).
    An unreadable photograph or an invalid barcode fails that input only; the exit code is then 1.
    """
    from bioclip_cli.cli import output
    from bioclip_cli.errors import BioclipError
    from bioclip_cli.workflows.predict import ROW_COLUMNS, predict

    output.check_outputs(output_file)
    if run is None:
        raise BioclipError("--run is required: the run whose model and key embeddings identify the specimens",
                           "bioclip predict specimen.jpg --run runs/demo")  # fmt: skip
    result = predict(
        run, images or [], dna or [], dna_fasta, manifest=manifest, keys=keys, index=index, k=k, key=key,
        device=device, batch_size=batch_size, which=which, novelty=novelty,
    )  # fmt: skip
    if log is not None:
        import sys

        from bioclip_cli.workflows.predict import write_provenance

        output.info(f"provenance: {write_provenance(log, result, sys.argv)}")
    for note in result.notes:
        output.warning(note)
    output.emit(
        result.rows(), format, output_file, columns=ROW_COLUMNS, json_obj=result.to_dict(),
        show_table=lambda: _table(result),
    )  # fmt: skip
    failed = result.failed
    for p in failed:
        output.warning(f"{p.input}: {p.error}")
    if failed:
        names = ", ".join(p.input for p in failed[:3]) + (" ..." if len(failed) > 3 else "")
        rest = "; the others are listed above" if len(failed) < len(result.predictions) else ""
        raise BioclipError(
            f"{len(failed)} of {len(result.predictions)} input(s) could not be identified ({names}){rest}",
            "fix or remove the inputs named in the warnings",
        )
