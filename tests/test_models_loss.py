"""The contrastive loss against a plain reference (values and gradients), and the gathered loss over two
real processes (torch.distributed, gloo, CPU)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from bioclip_cli.errors import ConfigError
from bioclip_cli.models.loss import ClipLoss


def features(n=6, d=8, names=("image", "dna", "text"), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: F.normalize(torch.randn(n, d, generator=g), dim=-1).requires_grad_(True) for m in names}


def reference(feats: dict, scale) -> torch.Tensor:
    """Mean over every directional term: -log softmax of the paired entry, written out row by row."""
    terms = []
    for a, b in itertools.combinations(list(feats), 2):
        logits = scale * feats[a] @ feats[b].T
        for mat in (logits, logits.T):
            rows = [torch.logsumexp(mat[i], dim=0) - mat[i, i] for i in range(mat.shape[0])]
            terms.append(torch.stack(rows).mean())
    return torch.stack(terms).mean()


@pytest.mark.parametrize("names", [("image", "dna"), ("image", "dna", "text"), ("dna", "text")])
def test_loss_and_gradients_equal_the_reference(names):
    feats = features(names=names)
    scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    loss, pairs = ClipLoss()(feats, scale.exp(), return_pairs=True)
    assert len(pairs) == len(names) * (len(names) - 1) // 2
    assert set(pairs) <= {"image-dna", "image-text", "dna-text"}
    grads = torch.autograd.grad(loss, [*feats.values(), scale])

    ref_feats = {m: f.detach().clone().requires_grad_(True) for m, f in feats.items()}
    ref_scale = scale.detach().clone().requires_grad_(True)
    ref = reference(ref_feats, ref_scale.exp())
    ref_grads = torch.autograd.grad(ref, [*ref_feats.values(), ref_scale])
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=1e-6)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(loss, torch.stack(list(pairs.values())).mean())


def test_exact_value_for_orthogonal_pairs():
    """Identical orthonormal features: each row's logits are s on the diagonal and 0 elsewhere."""
    eye = torch.eye(4)
    loss = ClipLoss()({"image": eye, "dna": eye.clone()}, 2.0)
    expected = -math.log(math.exp(2) / (math.exp(2) + 3))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_one_modality_is_refused():
    with pytest.raises(ConfigError, match="at least two modalities"):
        ClipLoss()(features(names=("image",)), 1.0)


def test_bf16_autocast_still_computes_in_float32():
    feats = {m: f.detach() for m, f in features().items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = ClipLoss()({m: f.bfloat16() for m, f in feats.items()}, 1 / 0.07)
    assert loss.dtype == torch.float32
    ref = ClipLoss()({m: f.bfloat16().float() for m, f in feats.items()}, 1 / 0.07)
    torch.testing.assert_close(loss, ref)


def test_gather_without_a_process_group_is_the_local_loss():
    feats = features()
    torch.testing.assert_close(ClipLoss(gather=True)(feats, 5.0), ClipLoss()(feats, 5.0))


# ------------------------------------------------------------------------------ two processes, gloo

SIZES = (3, 5)  # unequal local batches
IN_DIM, OUT_DIM = 6, 4


def _global_inputs():
    g = torch.Generator().manual_seed(42)
    n = sum(SIZES)
    x = {m: torch.randn(n, IN_DIM, generator=g) for m in ("image", "dna", "text")}
    w = {m: torch.randn(IN_DIM, OUT_DIM, generator=g) for m in x}
    return x, w


def _forward(x, w):
    return {m: F.normalize(x[m] @ w[m], dim=-1) for m in x}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, w = _global_inputs()
        start = sum(SIZES[:rank])
        local_x = {m: v[start : start + SIZES[rank]] for m, v in x.items()}
        w = {m: v.clone().requires_grad_(True) for m, v in w.items()}
        feats = _forward(local_x, w)
        for f in feats.values():
            f.retain_grad()
        loss = ClipLoss(gather=True)(feats, 1 / 0.07)
        local_loss = ClipLoss(gather=False)({m: f.detach() for m, f in feats.items()}, 1 / 0.07)
        loss.backward()
        torch.save(
            {
                "loss": loss.detach(),
                "local_loss": local_loss,
                "w_grad": {m: v.grad for m, v in w.items()},
                "feat_grad": {m: f.grad for m, f in feats.items()},
            },
            f"{out_dir}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gathered_loss_over_two_processes_equals_the_single_process_loss(tmp_path):
    import torch.multiprocessing as mp

    world = len(SIZES)
    mp.spawn(_worker, args=(world, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=world, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]

    x, w = _global_inputs()
    w = {m: v.clone().requires_grad_(True) for m, v in w.items()}
    feats = _forward(x, w)
    for f in feats.values():
        f.retain_grad()
    ref = ClipLoss()(feats, 1 / 0.07)
    ref.backward()

    for r, res in enumerate(results):
        torch.testing.assert_close(res["loss"], ref.detach(), atol=1e-6, rtol=1e-6)
        assert abs(res["local_loss"].item() - ref.item()) > 1e-3  # the local loss is a different number
        start = sum(SIZES[:r])
        for m, grad in res["feat_grad"].items():  # each process: world x the global gradient of its slice
            torch.testing.assert_close(grad / world, feats[m].grad[start : start + SIZES[r]], atol=1e-6, rtol=1e-5)
    for m in w:  # data-parallel averaging of parameter gradients gives exactly the single-process gradient
        averaged = sum(res["w_grad"][m] for res in results) / world
        torch.testing.assert_close(averaged, w[m].grad, atol=1e-6, rtol=1e-5)
