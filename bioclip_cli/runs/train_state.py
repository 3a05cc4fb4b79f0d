"""What a training run keeps between steps and between launches, and how it stops.

- `checkpoints/resume/`: Accelerate's full state (model, optimizer, registered schedule, the RNG states of
  every process, its step counter) plus `progress.json` (:class:`TrainProgress`: epoch, position in the epoch,
  step, best metric), written under a temporary name unique to the run's main process and renamed into place.
- `metrics.jsonl` (:class:`MetricsLog`): one JSON object per line; on resume, lines written after the state
  being resumed (by a crash or a divergence) are dropped, so no step appears twice.
- :class:`StopRequest`: the first Ctrl-C asks the loop to stop after the current step; the loop agrees on it
  across processes (:class:`StepStats`, :func:`any_process`) and saves.
- :class:`StepStats`: one optimizer step's loss, non-finite losses and Ctrl-C, summed over the processes in
  one collective.
- :func:`weights_digest`: the sha256 of a model's weights, compared across the processes of a run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bioclip_cli.runs.run_dir import RunDir

PROGRESS_FILE = "progress.json"


@dataclass
class TrainProgress:
    """Where a run stands; saved as `checkpoints/resume/progress.json` beside Accelerate's state."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the current epoch already trained on (the sampler's resume position)
    step: int = 0  # optimizer steps in total
    samples: int = 0  # training rows seen in total (all processes)
    best_value: float | None = None
    best_epoch: int | None = None
    best_step: int | None = None
    total_steps: int = 0  # length of the lr schedule (one-cycle depends on it)
    world: int = 1
    seconds: float = 0.0  # training time so far

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def read(cls, path: Path) -> TrainProgress:
        data = json.loads(path.read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class MetricsLog:
    """`metrics.jsonl`: one object per line, flushed at once (read it while the run goes on)."""

    def __init__(self, path: Path, enabled: bool, fresh: bool, keep_until_step: int | None):
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            path.write_text("")
        elif keep_until_step is not None and path.is_file():
            # lines written after the state we resume from (a crash or a divergence) are dropped: no repeats
            kept = [
                ln for ln in path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= keep_until_step
            ]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


class StopRequest:
    """First Ctrl-C: ask the loop to stop after the current step; a second one interrupts at once.

    A copy of the same Ctrl-C that arrives within a second (a launcher such as torchrun forwards the signal
    that the terminal already sent to every process) does not count as the second one.
    """

    def __init__(self):
        self.requested = False
        self._at = 0.0
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested and time.monotonic() - self._at > 1.0:
            raise KeyboardInterrupt
        if not self.requested:
            self.requested, self._at = True, time.monotonic()

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


@dataclass
class StepStats:
    """One optimizer step, summed over the processes: the loss, non-finite micro-batch losses, a Ctrl-C."""

    loss: float  # mean of the micro-batch losses of every process
    nonfinite: int  # micro-batch losses that were NaN or infinite
    stop_requested: bool  # Ctrl-C on any process

    @classmethod
    def reduce(cls, accelerator, micro_losses: list, stop_requested: bool) -> StepStats:
        """One collective (sum) over the processes for all three."""
        import torch

        losses = torch.stack(micro_losses)
        local = torch.stack([
            losses.sum(), (~torch.isfinite(losses)).sum().float(),
            torch.tensor(float(stop_requested), device=losses.device),
        ])  # fmt: skip
        total, nonfinite, stops = accelerator.reduce(local, reduction="sum").tolist()
        return cls(total / (len(micro_losses) * accelerator.num_processes), int(nonfinite), stops > 0)


def any_process(accelerator, flag: bool) -> bool:
    """True on every process when `flag` is true on any of them (one collective decision)."""
    if accelerator.num_processes == 1:
        return flag
    import torch

    value = torch.tensor([float(flag)], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)


def weights_digest(model) -> str:
    """sha256 over the model's state dict (names, dtypes, shapes, bytes) in name order: equal on every process
    of a synchronised run, and equal to the digest of the saved `model.safetensors` tensors."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_training_state(accelerator, run: RunDir, progress: TrainProgress, main: bool) -> None:
    """Accelerate's full state + progress.json into checkpoints/resume, atomically: every process writes into
    one temporary folder whose name the main process makes unique (pid + random), then main renames it in."""
    from bioclip_cli.atomic_write import fsync_tree, temporary_name

    names = [str(temporary_name(run.resume_state)) if main else None]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(names)
    tmp = Path(names[0])
    try:
        if main:
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if main:
            (tmp / PROGRESS_FILE).write_text(progress.to_json())
            fsync_tree(tmp)
            target = run.resume_state
            if target.exists():
                old = temporary_name(target, "old")
                target.rename(old)
                tmp.rename(target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(target)
    except BaseException:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()
