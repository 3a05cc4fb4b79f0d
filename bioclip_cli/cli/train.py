"""`bioclip train`: contrastive training of a preset, one CPU/GPU to many (Accelerate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from bioclip_cli.cli.options import ConfigOpt, FormatOpt, OutDirOpt, OutputOpt, PresetOpt, SetOpt, examples

EXAMPLES = examples(
    "bioclip train --preset idt-5m",
    "bioclip train --preset id-1m --set train.batch_size=128 --out runs/id-1m-b128",
    "accelerate launch --num_processes 4 -m bioclip_cli train --preset idt-5m-clibd",
    "bioclip train --preset idt-5m --out runs/idt-5m --resume",
    "bioclip train --preset idt-insect --init ckpt/bioscan_clip/trained_with_bioscan_1m/image_dna_text.pth",
    "bioclip train --preset tiny --max-steps 10 --format json > summary.json",
)
NO_ARGS_IS_HELP = True


def _flag_sets(**flags) -> list[str]:
    """Dedicated flags as --set overrides (they win over the preset, --config and --set)."""
    keys = {"epochs": "train.epochs", "max_steps": "train.max_steps", "batch_size": "train.batch_size",
            "num_workers": "data.num_workers", "seed": "train.seed", "precision": "train.precision",
            "report_to": "train.report_to"}  # fmt: skip
    return [f"{keys[name]}={value}" for name, value in flags.items() if value is not None]


def _console_events(tables_to_stderr: bool = False):
    """Training events printed as they come: parameter table, messages, a compact table per evaluation.

    With --format json/csv the tables are progress, not the result: they go to stderr with the messages.
    """
    from bioclip_cli.cli import output
    from bioclip_cli.workflows.train import TrainEvents

    stream = output.err if tables_to_stderr else output.console

    class ConsoleEvents(TrainEvents):
        def message(self, text: str) -> None:
            output.info(text)

        def parameters(self, rows: list[dict]) -> None:
            shown = [{k: f"{v:,}" if isinstance(v, int) else v for k, v in row.items()} for row in rows]
            output.print_table(shown, title="parameters", stream=stream)

        def evaluated(self, epoch: float, step: int, result, selection: dict) -> None:
            from bioclip_cli.retrieval.eval_result import pair_label

            k, levels = result.k[0], result.levels[-2:]  # compact: the two finest levels
            rows = []
            for query, key in result.combinations:
                row = {"query|key": pair_label(query, key)}
                for split in result.splits(query, key):
                    for level in levels:
                        name = "H.M." if split == "harmonic_mean" else split
                        row[f"{name} {level}"] = f"{100 * result.accuracy(query, key, split, 'micro', k, level):5.1f}"
                rows.append(row)
            output.print_table(rows, title=f"epoch {epoch} (step {step}): micro top-{k} accuracy (%)", stream=stream)
            mark = (
                " (new best)"
                if selection["is_best"]
                else f" (best {100 * selection['best']:.1f}, epoch {selection['best_epoch']})"
            )
            output.info(f"{selection['metric']}: {100 * selection['value']:.1f}{mark}")

    return ConsoleEvents()


def command(
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: OutDirOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's last saved state.")] = False,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Number of epochs.", show_default=False)] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Stop after this many steps.", show_default=False)
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Per-process batch size.", show_default=False)
    ] = None,
    num_workers: Annotated[
        int | None, typer.Option("--num-workers", help="DataLoader workers.", show_default=False)
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed.", show_default=False)] = None,
    precision: Annotated[
        Literal["fp32", "bf16", "fp16"] | None,
        typer.Option("--precision", help="Training precision (default: the preset's).", show_default=False),
    ] = None,
    report_to: Annotated[
        Literal["wandb", "tensorboard"] | None,
        typer.Option("--report-to", help="Experiment tracker (off by default).", show_default=False),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            "--init",
            help="Start from this checkpoint (model.checkpoint: ours or a published .pth); none: from the "
            "pretrained encoders. Default: the preset's (idt-insect: the released 1M I+D+T weights).",
            show_default=False,
        ),
    ] = None,
    format: FormatOpt = "table",
    output_file: OutputOpt = None,
) -> None:
    """Train a BIOSCAN-CLIP model; writes runs/NAME/ (config, checkpoints/last and best, metrics.jsonl).

    With --resume the run's saved config.yaml is the base (--config, --set and the flags still apply on top),
    and training continues exactly where the saved state left off. The summary at the end (run, epochs,
    steps, speed, best score) is a table, or JSON/CSV with --format.
    """
    from bioclip_cli.cli import output
    from bioclip_cli.config import load_config
    from bioclip_cli.errors import BioclipError
    from bioclip_cli.runs.run_dir import default_run_dir

    sets = [*(set_ or []), *_flag_sets(epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                                       num_workers=num_workers, seed=seed, precision=precision, report_to=report_to)]  # fmt: skip
    if init is not None:
        sets.append("model.checkpoint=null" if init.lower() == "none" else f"model.checkpoint={init}")
    if resume:
        if out is None and preset is None:
            raise BioclipError("--resume needs the run: give --out runs/NAME (or the --preset it was trained with)")
        from bioclip_cli.workflows.train import resume_config

        run_dir = out if out is not None else default_run_dir(Path(preset).stem)
        cfg = resume_config(run_dir, config or [], sets)
    else:
        if preset is None and not config:
            raise BioclipError(
                "give --preset NAME (see `bioclip presets`) or --config FILE", "bioclip train --preset demo"
            )
        cfg = load_config(preset, config or [], sets)
        run_dir = out if out is not None else default_run_dir(cfg.name)
    if not cfg.train.enabled:
        output.info(
            f"{cfg.name} is an untrained baseline: pretrained encoders with seeded random heads, no alignment "
            "(the paper's 'no alignment' rows). There is nothing to train; embed and evaluate it directly."
        )
        output.hint(f"bioclip embed --preset {cfg.name}  then  bioclip eval --run {default_run_dir(cfg.name)}")
        return

    from bioclip_cli.workflows.train import train

    result = train(cfg, run_dir, resume=resume, events=_console_events(tables_to_stderr=format != "table"))
    if not result.is_main:
        return
    best = result.best or {}
    summary = {"run": str(run_dir), "stopped": result.stopped, "epochs": result.epochs, "steps": result.steps,
               "samples_per_second": round(result.samples_per_second, 1), "best_metric": best.get("metric"),
               "best_value": best.get("value"), "best_epoch": best.get("epoch")}  # fmt: skip
    output.emit([summary], format, output_file, title=f"bioclip train: {cfg.name}")
    if result.stopped == "already complete":
        output.info(f"{run_dir} already finished its {result.epochs} epoch(s) ({result.steps} steps)")
        output.hint(f"train longer: bioclip train --out {run_dir} --resume --epochs {cfg.train.epochs + 1}")
    else:
        how = "stopped at --max-steps" if result.stopped == "max_steps" else "finished"
        output.success(
            f"{how}: {result.epochs} epoch(s), {result.steps} steps, {result.samples_per_second:,.1f} samples/s "
            f"-> {run_dir}"
        )
    if result.best is not None:
        output.info(f"best {result.best['metric']}: {100 * result.best['value']:.1f}% (epoch {result.best['epoch']})")
    output.hint(f"bioclip embed --run {run_dir}")
