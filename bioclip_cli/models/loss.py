"""The contrastive loss (docs/method.md, Contrastive loss): mean symmetric cross-entropy over every pair of
present modalities.

For each pair (A, B) of L2-normalised features, logits = s · A·Bᵀ with the identity as target, in both
directions; the total is the mean over all directional terms (2 for I+D, 6 for I+D+T).

`gather=True` (v2): the features of all processes are gathered *with gradients*, so every process computes
the loss over the global batch. The gather's backward sums the gradients of all processes' (identical)
losses, so each process's feature gradient is world_size x the global-batch gradient of its slice, and
data-parallel averaging of the parameter gradients yields exactly the single-process gradient on the
concatenated batch. `gather=False` (v1) uses only the local features.
"""

from __future__ import annotations

from itertools import combinations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from bioclip_cli.config.schema import MODALITIES
from bioclip_cli.errors import ConfigError


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 (sizes may differ per process); backward: all_reduce(sum), own slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        rank = dist.get_rank()
        longest = max(sizes)
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        ctx.rank, ctx.sizes = rank, sizes
        return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def distributed_world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_features(features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every process's features, concatenated in rank order, differentiable w.r.t. the local ones."""
    if distributed_world() == 1:
        return features
    first = next(iter(features.values()))
    local = torch.tensor([first.shape[0]], device=first.device, dtype=torch.long)
    counts = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, local)
    sizes = [int(c.item()) for c in counts]
    return {name: _GatherWithGrad.apply(feat, sizes) for name, feat in features.items()}


def pair_name(a: str, b: str) -> str:
    return f"{a}-{b}"


class ClipLoss(nn.Module):
    """`loss(features, logit_scale)` -> scalar; `return_pairs=True` also gives {"image-dna": ..., ...}.

    Each pair's value is the mean of its two directional cross-entropies, so the total (their mean) is
    the mean over all directional terms.
    """

    def __init__(self, gather: bool = False):
        super().__init__()
        self.gather = gather
        self._labels: dict[tuple[int, torch.device], torch.Tensor] = {}

    def _targets(self, n: int, device: torch.device) -> torch.Tensor:
        key = (n, device)
        if key not in self._labels:
            self._labels = {key: torch.arange(n, device=device)}
        return self._labels[key]

    def pair_losses(self, features: dict[str, torch.Tensor], logit_scale) -> dict[str, torch.Tensor]:
        names = [m for m in MODALITIES if m in features] + [m for m in features if m not in MODALITIES]
        if len(names) < 2:
            raise ConfigError(
                "model.modalities",
                f"the contrastive loss needs at least two modalities, got {', '.join(names) or 'none'}",
            )
        feats = {m: features[m] for m in names}
        if self.gather:
            feats = gather_features(feats)
        first = feats[names[0]]
        scale = torch.as_tensor(logit_scale, device=first.device).float()
        losses = {}
        with torch.autocast(first.device.type, enabled=False):
            for a, b in combinations(names, 2):
                logits = scale * (feats[a].float() @ feats[b].float().T)
                target = self._targets(logits.shape[0], logits.device)
                losses[pair_name(a, b)] = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        return losses

    def forward(self, features: dict[str, torch.Tensor], logit_scale, *, return_pairs: bool = False):
        pairs = self.pair_losses(features, logit_scale)
        total = torch.stack(list(pairs.values())).mean()
        return (total, pairs) if return_pairs else total
