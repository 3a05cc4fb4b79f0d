"""`bioclip zsl`: Bayesian zero-shot learning (BZSL) on INSECT with the DNA embeddings as side information."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from bioclip_cli.cli.options import JsonOpt, RunOpt, examples

EXAMPLES = examples(
    "bioclip zsl --run runs/idt-insect",
    "bioclip zsl --metadata INSECT_metadata.csv --image-embeddings image_embedding_from_bioscan_clip.csv "
    "--dna-embeddings dna_embedding_from_bioscan_clip.csv --json zsl.json",
    "bioclip zsl --run runs/idt-insect --no-tune --K 3 --k0 0.1 --k1 10 --m 2500 --s 10",
    "bioclip zsl --run runs/idt-insect --fit-on trainval --genus --details --format json --output zsl.json",
)


def command(
    run: RunOpt = None,
    metadata: Annotated[
        Path | None, typer.Option("--metadata", help="INSECT_metadata.csv (rows, labels, splits).", show_default=False)
    ] = None,
    image_embeddings: Annotated[
        Path | None,
        typer.Option("--image-embeddings", help="image_embedding_from_bioscan_clip.csv [d x N].", show_default=False),
    ] = None,
    dna_embeddings: Annotated[
        Path | None,
        typer.Option("--dna-embeddings", help="dna_embedding_from_bioscan_clip.csv [d x C].", show_default=False),
    ] = None,
    tune: Annotated[
        bool, typer.Option("--tune/--no-tune", help="Pick K, k0, k1, m, s on the 144-point grid (as the original).")
    ] = True,
    K: Annotated[int, typer.Option("--K", help="Without tuning: nearest seen classes per unseen class.")] = 3,
    k0: Annotated[float, typer.Option("--k0", help="Without tuning: prior mean scaling.")] = 0.1,
    k1: Annotated[float, typer.Option("--k1", help="Without tuning: class mean scaling.")] = 10.0,
    m: Annotated[
        float | None, typer.Option("--m", help="Without tuning: prior degrees of freedom (default 5 x pca-dim).")
    ] = None,
    s: Annotated[float, typer.Option("--s", help="Without tuning: prior covariance scaling.")] = 10.0,
    genus: Annotated[bool, typer.Option("--genus", help="Score unseen predictions at genus level.")] = False,
    fit_on: Annotated[
        Literal["train", "trainval"],
        typer.Option("--fit-on", help="Final fit on train_loc (the fork, the paper's numbers) or trainval_loc."),
    ] = "train",
    pca_dim: Annotated[int, typer.Option("--pca-dim", help="PCA dimension of the image features.")] = 500,
    covariance: Annotated[
        Literal["compat", "paper"],
        typer.Option("--covariance", help="compat: the code's q*J term (published numbers); paper: outer product."),
    ] = "compat",
    details: Annotated[bool, typer.Option("--details", help="Add the settings and every grid point to JSON.")] = False,
    format: Annotated[Literal["table", "csv", "json"], typer.Option("--format", help="table, csv or json.")] = "table",
    output_file: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Also write the results to this file (csv, else JSON).", show_default=False
        ),
    ] = None,
    json_out: JsonOpt = None,
) -> None:
    """Classify INSECT's seen and unseen species with BZSL: S, U (mean per-class top-1) and H = 2SU/(S+U).

    With --tune (the default) the hyper-parameters are chosen on a split of train_loc (unseen: val_loc),
    then the model is refitted on --fit-on and scored on test_seen / test_unseen.
    """
    from bioclip_cli.cli import output
    from bioclip_cli.retrieval.bzsl import BzslParams
    from bioclip_cli.workflows.zsl import run_zsl

    params = None if tune else BzslParams(K, k0, k1, float(m if m is not None else 5 * pca_dim), s)
    outcome = run_zsl(
        run, metadata, image_embeddings, dna_embeddings, tune=tune, params=params, fit_on=fit_on,
        pca_dim=pca_dim, covariance=covariance, genus=genus,
    )  # fmt: skip
    result = outcome.result
    data = result.to_json(details=details)
    row = {key: data[key] for key in ("seen_acc", "unseen_acc", "harmonic_mean")} | data["parameters"]
    if format == "table":
        shown = {"S (%)": 100 * row["seen_acc"], "U (%)": 100 * row["unseen_acc"], "H (%)": 100 * row["harmonic_mean"]}
        output.print_table([shown | data["parameters"]], title=f"BZSL on {outcome.image_embeddings}")
    elif format == "csv":
        import csv
        import sys

        writer = csv.DictWriter(sys.stdout, fieldnames=list(row), lineterminator="\n")
        writer.writeheader()
        writer.writerow(row)
    else:
        import json

        typer.echo(json.dumps(data, indent=2))
    if result.jitter:
        output.warning(f"the prior covariance was not positive definite; added {result.jitter:.3g} x identity")
    if output_file is not None:
        if format == "csv" or (format == "table" and output_file.suffix.lower() == ".csv"):
            output.write_csv(output_file, [row])
        else:
            output.write_json(output_file, data)
        output.info(f"wrote {output_file}")
    if json_out is not None:
        output.write_json(json_out, data)
    if outcome.saved is not None:
        output.success(f"saved {outcome.saved}")
