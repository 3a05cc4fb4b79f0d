"""`bioclip plot map|retrieval|curves|accuracy`: the paper's figures from a run (PNG, PDF or SVG)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from bioclip_cli.cli.options import FormatOpt, OutputOpt, RunOpt, SplitOpt, examples

EXAMPLES = examples(
    "bioclip plot map --run runs/demo --out map.png",
    "bioclip plot map --run runs/idt-5m --within order=Diptera,family=Sciaridae --level species --top 10 --out map.pdf",
    "bioclip plot retrieval --run runs/demo --query image --key dna --group unseen --out retrieval.png",
    "bioclip plot curves --run runs/demo --run runs/demo-2 --out curves.svg",
    "bioclip plot accuracy --run runs/demo --per-class --size column --out accuracy.pdf",
)

app = typer.Typer(
    help="Figures from a run: embedding map, retrieval examples, training curves, accuracy charts.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    epilog=EXAMPLES,
)

OutOpt = Annotated[Path, typer.Option("--out", help="Figure file: .png, .pdf or .svg (FILE.json beside it: its data).")]
SizeOpt = Annotated[
    Literal["column", "screen"],
    typer.Option("--size", help="column: a paper column, 3.5 in at 300 dpi; screen: 10 in at 100 dpi."),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the map projection and of the query choice.")]
QueryOpt = Annotated[Literal["image", "dna", "text", "avg", "concat"], typer.Option("--query", help="Query feature.")]
KeyOpt = Annotated[Literal["image", "dna", "text", "avg", "concat"], typer.Option("--key", help="Key feature.")]


def _report(result, format: str, output_file: Path | None) -> None:
    from bioclip_cli.cli import output

    for note in result.notes:
        output.warning(note)
    rows = [{"what": "figure", "path": str(result.figure)}, {"what": "drawn data", "path": str(result.data)}]
    output.emit(rows, format, output_file, title="Written", fold=True)


@app.command("map", epilog=EXAMPLES)
def map_command(
    out: OutOpt = Path("map.png"),
    run: RunOpt = None,
    embeddings: Annotated[
        Path | None, typer.Option("--embeddings", help="extracted_feature_from_*_split.hdf5", show_default=False)
    ] = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="labels_*.json", show_default=False)] = None,
    split: SplitOpt = "val",
    group: Annotated[Literal["seen", "unseen", "key"], typer.Option("--group", help="Rows to map.")] = "seen",
    within: Annotated[
        str | None,
        typer.Option(
            "--within", help="Keep rows of these taxa, e.g. order=Diptera,family=Sciaridae.", show_default=False
        ),
    ] = None,
    level: Annotated[
        Literal["order", "family", "genus", "species"], typer.Option("--level", help="Level of the colours.")
    ] = "species",
    top: Annotated[int, typer.Option("--top", help="Keep the N most frequent taxa at --level.")] = 10,
    method: Annotated[
        Literal["umap", "pca", "tsne"] | None,
        typer.Option("--method", help="Projection (default: umap if installed, else pca).", show_default=False),
    ] = None,
    seed: SeedOpt = 0,
    size: SizeOpt = "screen",
    format: FormatOpt = "table",
    output_file: OutputOpt = None,
) -> None:
    """2-D map of query embeddings: image, DNA and text in one map, one colour per taxon, marker per modality."""
    from bioclip_cli.workflows.plot import plot_map

    result = plot_map(
        out, run=run, embeddings=embeddings, labels=labels, split=split, group=group, within=within, level=level,
        top=top, method=method, seed=seed, size=size,
    )  # fmt: skip
    _report(result, format, output_file)


@app.command("retrieval", epilog=EXAMPLES)
def retrieval_command(
    run: Annotated[Path, typer.Option("--run", "-r", help="A run directory with embeddings.")],
    out: OutOpt = Path("retrieval.png"),
    split: SplitOpt = "val",
    group: Annotated[Literal["seen", "unseen"], typer.Option("--group", help="Query group.")] = "seen",
    query: QueryOpt = "image",
    key: KeyOpt = "image",
    n: Annotated[int, typer.Option("--n", help="Queries (rows of the grid), chosen with --seed.")] = 5,
    k: Annotated[int, typer.Option("--k", help="Keys shown per query.")] = 5,
    ids: Annotated[
        str | None, typer.Option("--ids", help="Comma-separated query sample ids instead of a seeded choice.")
    ] = None,
    seed: SeedOpt = 0,
    size: SizeOpt = "screen",
    format: FormatOpt = "table",
    output_file: OutputOpt = None,
) -> None:
    """Query images beside their top-k keys; borders: species match (dark green), genus match (light green)."""
    from bioclip_cli.workflows.plot import plot_retrieval

    wanted = [s.strip() for s in ids.split(",") if s.strip()] if ids else None
    result = plot_retrieval(
        out, run=run, split=split, group=group, query=query, key=key, n=n, k=k, ids=wanted, seed=seed, size=size
    )
    _report(result, format, output_file)


@app.command("curves", epilog=EXAMPLES)
def curves_command(
    run: Annotated[list[Path], typer.Option("--run", "-r", help="Run directory (repeat to overlay runs).")],
    out: OutOpt = Path("curves.png"),
    query: QueryOpt = "image",
    key: KeyOpt = "dna",
    levels: Annotated[str, typer.Option("--levels", help="Levels of the accuracy panel.")] = "genus,species",
    size: SizeOpt = "screen",
    format: FormatOpt = "table",
    output_file: OutputOpt = None,
) -> None:
    """Loss, learning rate, temperature and per-epoch top-1 accuracy from metrics.jsonl."""
    from bioclip_cli.workflows.plot import plot_curves

    level_list = [s.strip() for s in levels.split(",") if s.strip()]
    result = plot_curves(out, runs=run, query=query, key=key, levels=level_list, size=size)
    _report(result, format, output_file)


@app.command("accuracy", epilog=EXAMPLES)
def accuracy_command(
    run: Annotated[Path, typer.Option("--run", "-r", help="A run directory with embeddings or results.")],
    out: OutOpt = Path("accuracy.png"),
    split: SplitOpt = "val",
    query: Annotated[
        list[str] | None, typer.Option("--query", help="Query feature per pair (repeat; pairs with --key).")
    ] = None,
    key: Annotated[list[str] | None, typer.Option("--key", help="Key feature per pair (repeat).")] = None,
    levels: Annotated[str, typer.Option("--levels", help="Levels on the x axis.")] = "order,family,genus,species",
    per_class: Annotated[
        bool, typer.Option("--per-class", help="Add a panel: per-class accuracy against training specimens.")
    ] = False,
    tail_level: Annotated[
        Literal["order", "family", "genus", "species"], typer.Option("--tail-level", help="Classes of that panel.")
    ] = "species",
    size: SizeOpt = "screen",
    format: FormatOpt = "table",
    output_file: OutputOpt = None,
) -> None:
    """Top-1 accuracy per level, seen vs unseen, per query/key pair (default: image->image, dna->dna, image->dna)."""
    from bioclip_cli.errors import BioclipError
    from bioclip_cli.workflows.plot import plot_accuracy

    queries, keys = query or [], key or []
    if len(queries) != len(keys):
        raise BioclipError("give one --key per --query", "e.g. --query image --key dna --query dna --key dna")
    pairs = list(zip(queries, keys)) or [("image", "image"), ("dna", "dna"), ("image", "dna")]
    level_list = [s.strip() for s in levels.split(",") if s.strip()]
    result = plot_accuracy(
        out, run=run, split=split, pairs=pairs, levels=level_list, per_class=per_class, tail_level=tail_level, size=size
    )
    _report(result, format, output_file)
