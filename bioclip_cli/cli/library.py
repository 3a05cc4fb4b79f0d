"""`bioclip library build`: a reference library of your own specimens for `bioclip predict --keys`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bioclip_cli.cli.options import CheckpointOpt, PresetOpt, RunOpt, examples

EXAMPLES = examples(
    "bioclip embed --run runs/demo --manifest specimens.csv --out specimens.h5",
    "bioclip library build --from specimens.h5 --from more.h5 --out library.h5",
    "bioclip library build --manifest specimens.csv --run runs/demo --out library.h5",
    "bioclip library build --from runs/demo/embeddings/extracted_feature_from_val_split.hdf5 --out demo_keys.h5",
    "bioclip predict photo.jpg --run runs/demo --keys library.h5",
)

app = typer.Typer(help="Reference libraries of your own specimens.", no_args_is_help=True)


@app.command("build", epilog=EXAMPLES)
def build(
    out: Annotated[Path, typer.Option("--out", "-o", help="The library file to write.")],
    sources: Annotated[
        list[Path] | None,
        typer.Option(
            "--from",
            help="Embeddings to include (repeatable): files from `bioclip embed --images/--fasta/--manifest`, or "
            "an extracted_feature_from_<split>_split.hdf5 (its key group).",
            show_default=False,
        ),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest", help="Embed this manifest's specimens first (with --run or --checkpoint).", show_default=False
        ),
    ] = None,
    run: RunOpt = None,
    checkpoint: CheckpointOpt = None,
    preset: PresetOpt = None,
) -> None:
    """Make a reference library: embeddings + taxonomy + ids + the fingerprint of the model that made them.

    Sources embedded by different models are refused (their vectors cannot be compared).
    """
    from bioclip_cli.cli import output
    from bioclip_cli.errors import BioclipError

    if manifest is not None:
        if sources:
            raise BioclipError(
                "give --from FILE or --manifest FILE, not both", "embed the manifest first, then --from both"
            )
        from bioclip_cli.data.specimen_inputs import collect_specimens
        from bioclip_cli.workflows.embed import embed_specimens, plan_embedding

        plan = plan_embedding(run=run, checkpoint=checkpoint, preset=preset)
        specimens, problems = collect_specimens(manifest=manifest)
        result = embed_specimens(plan, specimens, out, kind="library", problems=problems)
        for sid, why in result.failed:
            output.warning(f"{sid}: {why}")
        rows, features, fingerprint = result.rows, result.features, result.model_fingerprint
    else:
        if run is not None or checkpoint is not None or preset is not None:
            raise BioclipError("--run/--checkpoint/--preset are for --manifest; --from files are already embedded")
        from bioclip_cli.workflows.library import build_library

        result = build_library(list(sources or []), out)
        rows, features, fingerprint = result.rows, result.features, result.model_fingerprint
    output.print_table(
        [{"feature": n, "specimens": c} for n, c in features.items()], title=f"library {out} ({rows} specimens)"
    )
    if not fingerprint:
        output.warning("the model that made these embeddings is unknown (a released file): predict cannot check it")
    output.success(f"wrote {out}")
    output.hint(f"bioclip predict PHOTO --run RUN --keys {out}")
