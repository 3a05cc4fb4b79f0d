"""The training sampler: a new permutation every epoch from (seed, epoch), sharded by rank, resumable mid-epoch.

Every process computes the same permutation of the group's rows (from `seed` and the epoch alone), cuts it
into global batches of `batch_size x world` rows and takes its own slice of each: rank r gets rows
[r*B, (r+1)*B) of every global batch. The processes' batches of one step, concatenated in rank order, are
therefore the global batch a single process would see with `batch_size x world` rows (the equivalence the
gathered loss relies on). Incomplete global batches are dropped (the contrastive loss wants full batches), and
with gradient accumulation so are the batches left over after the last complete optimizer step.

`set_epoch(epoch, start=k)` starts the epoch's iteration at batch k, which is how `--resume` continues a run
interrupted mid-epoch with exactly the batches it had not seen yet.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from bioclip_cli.errors import ConfigError

_SEED_MIX = 0x9E3779B9  # keeps (seed, epoch) pairs apart: seed 1 epoch 0 != seed 0 epoch 1


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The row order of one epoch: a permutation of range(n) that depends only on (seed, epoch)."""
    rng = np.random.Generator(np.random.PCG64([int(seed) & 0xFFFFFFFF, _SEED_MIX, int(epoch)]))
    return rng.permutation(n)


class EpochSampler:
    """A batch sampler (for `DataLoader(batch_sampler=...)`) yielding this rank's row indices per step."""

    def __init__(self, n_rows: int, batch_size: int, *, seed: int, rank: int = 0, world: int = 1, accumulate: int = 1):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in 0..{world - 1}")
        per_step = batch_size * world * accumulate
        if n_rows < per_step:
            accum = f" x {accumulate} accumulated batches" if accumulate > 1 else ""
            most = n_rows // (world * accumulate)
            if most < 2:  # no batch size can help: the group itself is (nearly) empty
                raise ConfigError(
                    "train.batch_size",
                    f"the training group has only {n_rows} row(s); contrastive training needs at least "
                    f"{2 * world * accumulate} (2 per batch{' per process' if world > 1 else ''})",
                    "check data.train_group and the dataset (bioclip inspect FILE shows the rows per group)",
                )
            raise ConfigError(
                "train.batch_size",
                f"train.batch_size={batch_size} x {world} process(es){accum} = {per_step} rows per step, but the "
                f"training group has only {n_rows} rows",
                f"use a batch size of at most {most} (e.g. --batch-size {max(2, most)})",
            )
        self.n_rows = int(n_rows)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world = int(world)
        self.accumulate = int(accumulate)
        self.epoch = 0
        self.start = 0

    @property
    def batches_per_epoch(self) -> int:
        """Full global batches in one epoch: a multiple of `accumulate` (the incomplete rest is dropped)."""
        steps = self.n_rows // (self.batch_size * self.world * self.accumulate)
        return steps * self.accumulate

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch `epoch` from its batch `start` (0: the whole epoch)."""
        if not 0 <= start <= self.batches_per_epoch:
            raise ValueError(f"start batch {start} is not in 0..{self.batches_per_epoch}")
        self.epoch = int(epoch)
        self.start = int(start)

    def global_batches(self) -> np.ndarray:
        """[batches_per_epoch, batch_size x world] rows of every global batch of the current epoch."""
        perm = epoch_permutation(self.n_rows, self.seed, self.epoch)
        n = self.batches_per_epoch * self.batch_size * self.world
        return perm[:n].reshape(self.batches_per_epoch, self.batch_size * self.world)

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start

    def __iter__(self) -> Iterator[list[int]]:
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for batch in self.global_batches()[self.start :]:
            yield batch[lo:hi].tolist()


def shard_rows(n_rows: int, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[tuple[list[int], int]]:
    """Evaluation batches of one process: `(rows, n_valid)` per step, covering every row once in order.

    Step s covers rows [s*B*W, (s+1)*B*W); rank r takes the r-th block of B of them, so gathering the
    processes' outputs in rank order gives the rows in file order. Every process yields the same number of
    steps and, in a step, the same number of rows (what `all_gather` needs): a process with fewer (or no)
    rows left repeats a valid row, and only its first `n_valid` outputs are real.
    """
    per_step = batch_size * world
    for start in range(0, n_rows, per_step):
        width = min(batch_size, n_rows - start)  # rank 0's share: the most any rank gets in this step
        lo = min(start + rank * batch_size, n_rows)
        hi = min(lo + batch_size, n_rows)
        rows = list(range(lo, hi))
        n_valid = len(rows)
        rows += [rows[-1] if rows else n_rows - 1] * (width - n_valid)
        yield rows, n_valid
