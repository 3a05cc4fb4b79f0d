"""`bioclip demo`: the whole method on the bundled sample, in minutes on a laptop CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bioclip_cli.cli.options import FormatOpt, JsonOpt, OutputOpt, examples

EXAMPLES = examples(
    "bioclip demo",
    "bioclip demo --out runs/demo --epochs 4",
    "bioclip demo --overwrite --json demo.json",
    "bioclip demo --overwrite --format json > demo.json",
)


def _console_events():
    """Stage headers, one line per training evaluation, and the training parameter count."""
    from bioclip_cli.cli import output
    from bioclip_cli.pipelines.demo import DemoEvents

    class ConsoleEvents(DemoEvents):
        def stage(self, number: int, total: int, title: str) -> None:
            output.info(f"[bold][{number}/{total}] {title}[/bold]")

        def stage_done(self, title: str, seconds: float, detail: str) -> None:
            output.info(f"  done in {seconds:.1f} s: {detail}")

        def message(self, text: str) -> None:
            output.info(f"  {text}")

        def parameters(self, rows: list[dict]) -> None:
            total = next((r for r in rows if r.get("encoder") == "all"), rows[-1] if rows else None)
            if total is not None and "trainable" in total:
                output.info(f"  {total['trainable']:,} trainable parameters")

        def evaluated(self, epoch: int, step: int, result: dict, selection: dict) -> None:
            mark = " (best so far)" if selection["is_best"] else ""
            output.info(f"  epoch {epoch}: {selection['metric']} = {100 * selection['value']:.1f}%{mark}")

    return ConsoleEvents()


def command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to create.")] = Path("runs/demo"),
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Training epochs (default: the demo preset's).", show_default=False)
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier demo in --out (only a folder the demo made).")
    ] = False,
    threads: Annotated[
        int,
        typer.Option(
            "--threads", help="torch CPU threads (the small demo models run fastest on 1; 0: torch's default)."
        ),
    ] = 1,
    json_out: JsonOpt = None,
    format: FormatOpt = "table",
    output_file: OutputOpt = None,
) -> None:
    """Build the sample HDF5, evaluate the untrained baseline, train a small model, embed, evaluate, compare.

    The sample's DNA barcodes and taxonomy are real; its images are synthetic, so the numbers show the method
    working, not the paper's accuracy. --out is an ordinary run directory: `bioclip eval --run` and
    `bioclip predict --run` take it. --format json prints the summary --json writes; --format csv the
    before/after rows (fractions).
    """
    from bioclip_cli.cli import output
    from bioclip_cli.errors import BioclipError
    from bioclip_cli.pipelines.demo import COMPARED_LEVELS, run_demo

    if threads < 0:
        raise BioclipError(f"--threads must be 0 (torch's default) or more, got {threads}")
    result = run_demo(out, epochs=epochs, overwrite=overwrite, threads=threads, events=_console_events())

    rows = []
    for row in result.comparison_rows(percent=True):
        shown = {"search": f"{row['query']} -> {row['key']}", "queries": row["split"]}
        for level in COMPARED_LEVELS:
            before, after = row[f"{level} before"], row[f"{level} after"]
            shown[level] = f"{before:5.1f} -> {after:5.1f} ({after - before:+5.1f})"
        rows.append(shown)
    summary = {"out": str(result.out), "comparison": result.comparison_rows(percent=False), "seconds": result.seconds,
               "files": result.files, "before": result.baseline.to_json()["results"],
               "after": result.trained.to_json()["results"]}  # fmt: skip
    title = "Micro top-1 accuracy (%), untrained -> trained, on the sample's val queries"
    if output.emit(summary["comparison"], format, output_file, title=title, json_obj=summary, table_rows=rows):
        output.print_table(result.files, title=f"Where everything went ({result.out})", fold=True)
    minutes, seconds = divmod(result.seconds["total"], 60)
    output.success(
        f"demo finished in {int(minutes)} min {seconds:.0f} s: image->DNA genus micro top-1 "
        f"{100 * result.gain('image', 'dna', 'genus'):+.1f} points over the untrained model (mean of seen, unseen)"
    )
    output.warning("the sample's images are synthetic: these numbers show the method working, not its accuracy")
    if json_out:
        output.write_json(json_out, summary)
    output.hint(f"bioclip eval --run {result.out}   |   bioclip predict SPECIMEN.jpg --run {result.out}")
