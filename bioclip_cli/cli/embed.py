"""`bioclip embed`: export embeddings of the query and key groups in the published layout."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from bioclip_cli.cli.options import (
    CheckpointOpt,
    ConfigOpt,
    FormatOpt,
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
    format: FormatOpt = "table",
    output_file: OutputOpt = None,
) -> None:
    """Encode the query groups and all_keys with every modality of the model; write the published HDF5 + labels JSON.

    The files go to OUT/embeddings/ (OUT: the run directory, or runs/NAME for a checkpoint or a preset), so
    that `bioclip eval --run OUT` finds them. A rerun with the same weights skips the groups already written.
    """
    from bioclip_cli.cli import output
    from bioclip_cli.workflows.embed import embed, plan_embedding

    plan = plan_embedding(
        run=run, checkpoint=checkpoint, preset=preset, files=config or [], sets=set_ or [], which=which, out=out
    )
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
