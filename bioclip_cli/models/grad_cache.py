"""Gradient caching: the contrastive loss of a whole batch at the activation memory of a micro-batch.

A contrastive loss couples every sample with every other one, so gradient accumulation as Accelerate
does it (a loss per micro-batch) loses negatives. Gradient caching (Gao et al., 2021, "Scaling Deep
Contrastive Learning Batch Size under Memory Limited Setup") keeps them:

1. embed the batch micro-batch by micro-batch without a graph, saving the RNG state before each one;
2. compute the loss on the concatenated features (gathered over processes when the loss is, with the
   logit scale attached) and its gradient with respect to each feature (and to the logit scale);
3. re-run each micro-batch with a graph, the RNG state restored (same dropout masks; augmentation
   happened in the data loader), and back-propagate `Σ feature · its cached gradient`, whose gradient
   with respect to the parameters is exactly the slice's share of the full-batch gradient. The logit
   scale's gradient rides on the last micro-batch's backward (`scale · dL/dscale`).

Under DDP every backward but the last runs in `no_sync`, so the parameter gradients are all-reduced once.
The peak activation memory is that of one micro-batch (plus the [B, d] features and the [B, B] logits);
the time is one extra forward.

Hand-written because the reference implementation (`grad-cache`) is unmaintained and does not know
Accelerate, gathered losses or a learned logit scale.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import nullcontext

import torch


def split_batch(batch: Mapping[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    """Consecutive row slices of every tensor of `batch` (views, no copy), `size` rows each (last: the rest)."""
    n = next(iter(batch.values())).shape[0]
    return [{key: value[s : s + size] for key, value in batch.items()} for s in range(0, n, size)]


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def grad_cache_step(
    model: Callable[[dict], dict[str, torch.Tensor]],
    batch: Mapping[str, torch.Tensor],
    loss_fn: Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor],
    logit_scale: Callable[[], torch.Tensor],
    micro_batch_size: int,
    *,
    backward: Callable[[torch.Tensor], None] | None = None,
    no_sync: Callable[[], object] | None = None,
) -> torch.Tensor:
    """One forward-backward of `loss_fn(model(batch), logit_scale())` in micro-batches; returns the loss
    (detached). Parameter gradients are accumulated into `.grad` as one full-batch backward would.

    `model(micro_batch)` -> {modality: [b, d] features}; `logit_scale()` builds the scale with its graph
    (called once for the loss, once for the last backward); `backward(tensor)` defaults to
    `tensor.backward()` (pass `accelerator.backward` for its loss scaling); `no_sync()` is a context
    manager that suspends DDP's gradient all-reduce (`accelerator.no_sync(model)`), used for every
    micro-batch backward but the last.
    """
    backward = backward or (lambda t: t.backward())
    parts = split_batch(batch, micro_batch_size)
    device = next(iter(batch.values())).device
    states, cached = [], []
    with torch.no_grad():
        for part in parts:
            states.append(_rng_state(device))
            cached.append(model(part))
    names = list(cached[0])
    leaves = {m: torch.cat([c[m] for c in cached]).detach().requires_grad_() for m in names}
    scale = logit_scale()
    scale_leaf = scale.detach().requires_grad_() if scale.requires_grad else scale.detach()
    with torch.enable_grad():
        loss = loss_fn(leaves, scale_leaf)
        wrt = [leaves[m] for m in names] + ([scale_leaf] if scale_leaf.requires_grad else [])
        grads = torch.autograd.grad(loss, wrt)
    feature_grads = dict(zip(names, grads[: len(names)], strict=True))
    scale_grad = grads[len(names)] if scale_leaf.requires_grad else None
    end_state = _rng_state(device)
    start = 0
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        _set_rng_state(states[i], device)
        with nullcontext() if last or no_sync is None else no_sync():
            feats = model(part)
            rows = next(iter(feats.values())).shape[0]
            surrogate = sum((feats[m] * feature_grads[m][start : start + rows].to(feats[m].dtype)).sum() for m in names)
            if last and scale_grad is not None:
                surrogate = surrogate + (logit_scale() * scale_grad).sum()
            backward(surrogate)
        start += rows
    _set_rng_state(end_state, device)
    return loss.detach()
