"""The one place where `train` and `embed` create their Accelerate `Accelerator` (:func:`make_accelerator`;
:func:`training_accelerator` adds a training run's precision, accumulation and trackers).

Two things Accelerate does not do on its own:

- A process launched by torchrun or `accelerate launch --multi_gpu` on a machine without CUDA gets no
  process group unless `cpu=True` is passed: every process would then run alone (unsynchronised replicas,
  the upstream v1 bug). Here such a launch becomes a CPU (gloo) process group, and a launch whose size
  does not match the process group Accelerate built is an error.
- Accelerate keeps its settings in a process-wide singleton, so a second run with another precision in
  the same Python process (a notebook) fails; the settings (not the process group) are reset first.
"""

from __future__ import annotations

import os
from pathlib import Path

from bioclip_cli.config.schema import TrainConfig
from bioclip_cli.errors import BioclipError, ConfigError


def launched_processes() -> int:
    """WORLD_SIZE of a torchrun / `accelerate launch --multi_gpu` launch (1 for a plain run)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def make_accelerator(**kwargs):
    """An `accelerate.Accelerator(**kwargs)` whose process group matches the launch."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    world = launched_processes()
    if world > 1 and not torch.cuda.is_available():
        kwargs.setdefault("cpu", True)
    accelerator = Accelerator(**kwargs)
    if accelerator.num_processes != world:
        raise BioclipError(
            f"this process was launched as one of {world}, but Accelerate set up {accelerator.num_processes} "
            f"process(es) ({accelerator.distributed_type}); the replicas would not be synchronised",
            "launch with `accelerate launch --multi_gpu --num_processes N -m bioclip_cli ...` or "
            "`torchrun --nproc_per_node N -m bioclip_cli ...`",
        )
    return accelerator


def training_accelerator(train: TrainConfig, project_dir: str | Path):
    """The `Accelerator` of a training run: its precision, gradient accumulation and trackers (`train`)."""
    import importlib.util

    from accelerate.utils import GradientAccumulationPlugin

    for tracker in train.report_to:
        if importlib.util.find_spec(tracker) is None:
            raise ConfigError(
                "train.report_to",
                f"--report-to {tracker} needs the {tracker} package, which is not installed",
                f"pip install 'bioscan-clip[{tracker}]', or leave --report-to out",
            )
    precision = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[train.precision]
    accelerator = make_accelerator(
        mixed_precision=precision,
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=train.grad_accum, sync_with_dataloader=False),
        log_with=list(train.report_to) or None,
        project_dir=str(project_dir),
    )
    if train.precision == "fp16" and accelerator.device.type == "cpu":
        raise ConfigError("train.precision", "--precision fp16 needs a GPU; on a CPU use --precision bf16 or fp32")
    return accelerator
