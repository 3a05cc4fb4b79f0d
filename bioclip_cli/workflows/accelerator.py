"""The one place where `train` and `embed` create their Accelerate `Accelerator`.

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

from bioclip_cli.errors import BioclipError


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
