"""`bioclip finetune-classifier`: a linear species head over a trained model's encoders (supervised baseline)."""

from __future__ import annotations

from typing import Annotated

import typer

from bioclip_cli.cli.options import CheckpointOpt, FormatOpt, OutDirOpt, OutputOpt, PresetOpt, RunOpt, examples

EXAMPLES = examples(
    "bioclip finetune-classifier --run runs/idt-1m --epochs 150",
    "bioclip finetune-classifier --run runs/demo --epochs 5 --batch-size 16",
    "bioclip finetune-classifier --run runs/idt-5m --modalities image,dna   # both heads, loss = CE + CE",
    "bioclip finetune-classifier --run runs/idt-5m --resume",
    "bioclip finetune-classifier --run runs/idt-insect --modalities image,dna   # INSECT's supervised baseline",
    "bioclip finetune-classifier --checkpoint best.pth --preset idt-1m --out runs/idt-1m-published",
)


def command(
    run: RunOpt = None,
    checkpoint: CheckpointOpt = None,
    preset: PresetOpt = None,
    out: OutDirOpt = None,
    modalities: Annotated[
        str, typer.Option("--modalities", help="Heads: image, or image,dna (loss = sum of the cross-entropies).")
    ] = "image",
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs over the seen training rows.")] = 150,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 1e-3,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per step (per process).")] = 200,
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            help="Training group (default: train_seen, else seen_keys; INSECT: trainval).",
            show_default=False,
        ),
    ] = None,
    probe: Annotated[
        bool, typer.Option("--probe", help="Linear probe: freeze the encoders, train the heads only.")
    ] = False,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Default: the run's train.seed.", show_default=False)
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the saved state: the last epoch, or where Ctrl-C stopped.")
    ] = False,
    which: Annotated[str, typer.Option("--which", help="Checkpoint of the run to start from: best or last.")] = "best",
    format: FormatOpt = "table",
    output_file: OutputOpt = None,
) -> None:
    """Train a linear head per encoder over the seen training species (classes in sorted order).

    Checkpoints go to RUN/classifier/checkpoints/ (last, best by validation seen top-1, resume);
    `bioclip eval --run RUN --hybrid two` uses the best one.
    """
    from bioclip_cli.cli import output
    from bioclip_cli.workflows.classifier import finetune_classifier, plan_classifier

    plan = plan_classifier(run=run, checkpoint=checkpoint, preset=preset, out=out, which=which)
    heads = [m.strip() for m in modalities.split(",") if m.strip()]
    result = finetune_classifier(
        plan, modalities=heads, epochs=epochs, lr=lr, batch_size=batch_size, group=group,
        freeze_encoders=probe, seed=seed, resume=resume,
    )  # fmt: skip
    if not result.is_main:
        return
    rows = [
        {"epoch": result.epochs - len(result.epoch_losses) + i + 1, "loss": round(loss, 5), "val seen top-1": round(acc, 4)}
        for i, (loss, acc) in enumerate(zip(result.epoch_losses, result.val_top1))
    ]  # fmt: skip
    summary = {"out": str(result.out), "group": result.group, "classes": result.n_classes, "rows": result.n_rows,
               "epochs": result.epochs, "steps": result.steps, "stopped": result.stopped, "best": result.best,
               "epochs_run": rows}  # fmt: skip
    title = f"classifier on {result.group}: {result.n_classes} species, {result.n_rows} rows"
    output.emit(rows, format, output_file, title=title, json_obj=summary, columns=["epoch", "loss", "val seen top-1"])
    if result.stopped == "already complete":
        output.info(f"{result.out} already holds {result.epochs} epochs; nothing to do (raise --epochs to continue)")
    else:
        output.success(f"saved {result.out}/checkpoints/ (best: epoch {result.best['epoch']})")
    output.hint(f"bioclip eval --run {plan.out} --hybrid two")
