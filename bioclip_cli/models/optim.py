"""Optimizer and learning-rate schedule of the two recipes (docs/method.md, Training recipes).

- v1: Adam, lr 1e-3, no weight decay, constant lr.
- v2 (CLIBD): AdamW (weight decay on every trainable parameter), one-cycle schedule stepped once per
  optimizer step (start lr = max / div_factor, warm-up share pct_start, cosine annealing, torch's
  OneCycleLR defaults otherwise), with the maximum lr scaled by global batch / lr_reference_batch.
- cosine (the original's full fine-tuning configs): cosine annealing from lr to `train.min_lr` over all
  optimizer steps, stepped once per step (torch's CosineAnnealingLR with T_max = the total steps), so
  step 0 trains at lr, step T/2 at (lr + min_lr) / 2 and the lr after the last step is min_lr.

The global batch is what one optimizer step sees: per-process batch x processes x accumulated batches.
"""

from __future__ import annotations

import torch

from bioclip_cli.config.schema import TrainConfig


def effective_lr(train: TrainConfig, global_batch: int) -> float:
    """`train.lr`, scaled by global_batch / lr_reference_batch when a reference batch is set (v2)."""
    if train.lr_reference_batch is None:
        return float(train.lr)
    return float(train.lr) * global_batch / train.lr_reference_batch


def build_optimizer(params, train: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """Adam (v1) or AdamW (v2) over `params` (the trainable ones) at learning rate `lr`."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (every encoder is frozen)")
    if train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=train.weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=train.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig, lr: float, total_steps: int):
    """The per-step schedule: constant, one-cycle over `total_steps` optimizer steps peaking at `lr`, or
    cosine from `lr` down to `train.min_lr` over `total_steps`."""
    if train.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, int(total_steps)), eta_min=min(float(train.min_lr), lr)
        )
    if train.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=lr,
            total_steps=max(1, int(total_steps)),
            pct_start=train.onecycle_pct_start,
            div_factor=train.onecycle_div_factor,
            anneal_strategy="cos",
        )
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
