"""`bioclip train`: contrastive training of a preset, one CPU/GPU to many (Accelerate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bioclip_cli.cli.options import ConfigOpt, OutDirOpt, PresetOpt, SetOpt, examples
from bioclip_cli.errors import NotAvailableYet

EXAMPLES = examples(
    "bioclip train --preset idt-5m",
    "bioclip train --preset id-1m --set train.batch_size=128 --out runs/id-1m-b128",
    "accelerate launch --num_processes 4 -m bioclip_cli train --preset idt-5m-clibd",
    "bioclip train --preset idt-5m --out runs/idt-5m --resume",
)
NO_ARGS_IS_HELP = True


def command(
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: OutDirOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's last saved state.")] = False,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Number of epochs.", show_default=False)] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after this many steps.", show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Per-process batch size.", show_default=False)] = None,
    num_workers: Annotated[int | None, typer.Option("--num-workers", help="DataLoader workers.", show_default=False)] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed.", show_default=False)] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="fp32, bf16 or fp16.", show_default=False)] = None,
    report_to: Annotated[
        str | None, typer.Option("--report-to", help="wandb or tensorboard (off by default).", show_default=False)
    ] = None,
) -> None:
    """Train a BIOSCAN-CLIP model; writes runs/NAME/ (config, checkpoints/last and best, metrics.jsonl)."""
    raise NotAvailableYet("bioclip train (contrastive training)")
