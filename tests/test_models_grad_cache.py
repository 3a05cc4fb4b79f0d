"""Gradient caching equals one backward of the full-batch loss: tiny model, LoRA and full fine-tuning,
fixed and learned logit scale, dropout on (same masks through the saved RNG states)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from bioclip_cli.config import load_config
from bioclip_cli.models.build import build_model
from bioclip_cli.models.grad_cache import grad_cache_step, split_batch
from bioclip_cli.models.loss import ClipLoss


def _model(finetune: str, learn_scale: bool, dropout: float):
    cfg = load_config("tiny").model
    encoders = {}
    for name in ("image", "dna", "text"):
        enc = getattr(cfg, name)
        encoders[name] = replace(enc, finetune=finetune, lora=replace(enc.lora, dropout=dropout))
    cfg = replace(cfg, learn_logit_scale=learn_scale, **encoders)
    torch.manual_seed(0)
    return build_model(cfg, pretrained=False)


def _batch(n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "image": torch.randn(n, 3, 32, 32, generator=g),
        "dna": torch.randint(4, 1027, (n, 40), generator=g),
        "dna_mask": torch.ones(n, 40, dtype=torch.long),
        "text": torch.randint(4, 512, (n, 12), generator=g),
        "text_mask": torch.ones(n, 12, dtype=torch.long),
        "text_type": torch.zeros(n, 12, dtype=torch.long),
    }


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def _assert_close(a: dict, b: dict, rtol: float = 1e-6):
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        scale = b[name].abs().max().clamp_min(1e-12)
        assert ((a[name] - b[name]).abs().max() / scale) < rtol, name


@pytest.mark.parametrize(("finetune", "learn_scale"), [("lora", False), ("lora", True), ("full", True)])
def test_micro_batches_equal_the_full_batch_with_dropout(finetune, learn_scale):
    model = _model(finetune, learn_scale, dropout=0.1)
    model.train()
    batch, loss_fn = _batch(12), ClipLoss()

    torch.manual_seed(7)
    loss = grad_cache_step(model, batch, loss_fn, lambda: model.logit_scale, 4)
    cached = _grads(model)
    model.zero_grad(set_to_none=True)

    torch.manual_seed(7)  # reference: every micro-batch forward with a graph, one backward of the full loss
    parts = [model(p) for p in split_batch(batch, 4)]
    feats = {m: torch.cat([p[m] for p in parts]) for m in parts[0]}
    ref_loss = loss_fn(feats, model.logit_scale)
    ref_loss.backward()
    assert torch.allclose(loss, ref_loss.detach(), rtol=1e-6, atol=0)
    _assert_close(cached, _grads(model))
    if learn_scale:
        assert model.log_logit_scale.grad is not None and model.log_logit_scale.grad.abs() > 0


def test_without_dropout_micro_batches_equal_one_plain_step_and_rng_matters():
    """float64: a whole-batch matmul and micro-batch matmuls round differently in float32 (~1e-6 of the
    largest gradient here); in float64 the identity shows to 1e-10."""
    model = _model("lora", True, dropout=0.0).double()
    model.eval()  # no dropout anywhere: the plain whole-batch forward is the reference
    batch, loss_fn = _batch(10), ClipLoss()
    batch["image"] = batch["image"].double()
    loss = grad_cache_step(model, batch, loss_fn, lambda: model.logit_scale, 3)  # 3 + 3 + 3 + 1 rows
    cached = _grads(model)
    model.zero_grad(set_to_none=True)
    ref_loss = loss_fn(model(batch), model.logit_scale)
    ref_loss.backward()
    assert torch.allclose(loss.double(), ref_loss.detach().double(), rtol=1e-10, atol=0)
    _assert_close(cached, _grads(model), rtol=1e-10)
    batch["image"] = batch["image"].float()

    # with dropout on, a re-run that did not restore the RNG would see other masks: gradients differ
    model = _model("lora", False, dropout=0.3)
    model.train()
    torch.manual_seed(3)
    grad_cache_step(model, batch, loss_fn, lambda: model.logit_scale, 5)
    good = _grads(model)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    from bioclip_cli.models import grad_cache

    restore = grad_cache._set_rng_state
    grad_cache._set_rng_state = lambda state, device: None
    try:
        grad_cache_step(model, batch, loss_fn, lambda: model.logit_scale, 5)
    finally:
        grad_cache._set_rng_state = restore
    bad = _grads(model)
    assert any(not torch.allclose(good[n], bad[n]) for n in good)


def test_no_sync_wraps_every_backward_but_the_last():
    model = _model("lora", False, dropout=0.0)
    calls = []

    class Recorder:
        def __enter__(self):
            calls.append("no_sync")

        def __exit__(self, *exc):
            return False

    def backward(t):
        calls.append("backward")
        t.backward()

    grad_cache_step(model, _batch(9), ClipLoss(), lambda: model.logit_scale, 4, backward=backward, no_sync=Recorder)
    assert calls == ["no_sync", "backward", "no_sync", "backward", "backward"]


@pytest.mark.slow
def test_training_with_micro_batches_takes_the_same_steps(sample_h5, tmp_path):
    """The training loop with `train.micro_batch_size`: v2 options (gathered loss, learned temperature,
    bf16 autocast, gradient checkpointing); one micro-batch per batch gives the plain step's weights."""
    from safetensors.torch import load_file

    from bioclip_cli.workflows.train import train

    common = [f"data.hdf5={sample_h5}", "train.batch_size=8", "train.max_steps=2", "model.learn_logit_scale=true",
              "train.loss=gathered", "train.precision=bf16", "train.grad_checkpointing=true", "train.eval_every=0"]  # fmt: skip
    result = train(load_config("tiny", sets=[*common, "train.micro_batch_size=3"]), tmp_path / "micro")
    assert (result.steps, result.samples) == (2, 16)
    records = [json.loads(x) for x in (tmp_path / "micro/metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in records if r["type"] == "train")

    plain_cfg = load_config("tiny", sets=[*common, "train.precision=fp32"])
    train(plain_cfg, tmp_path / "plain")
    train(load_config("tiny", sets=[*common, "train.precision=fp32", "train.micro_batch_size=8"]), tmp_path / "one")
    plain = load_file(str(tmp_path / "plain/checkpoints/last/model.safetensors"))
    one = load_file(str(tmp_path / "one/checkpoints/last/model.safetensors"))
    for name, value in plain.items():
        torch.testing.assert_close(one[name], value, rtol=1e-5, atol=1e-6)
