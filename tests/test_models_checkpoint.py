"""Our checkpoint format: model.safetensors + config.yaml + meta.json, written atomically and read back
into models of the same or another fine-tuning mode."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from bioclip_cli import __version__
from bioclip_cli.config import load_config
from bioclip_cli.errors import DataError
from bioclip_cli.models import build_model, load_weights, read_checkpoint_config, save_checkpoint
from bioclip_cli.models.checkpoint import read_weights


def tiny_batch(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    dna = torch.randint(3, 1027, (n, 133), generator=g)
    dna[:, 0] = 0
    text = torch.randint(5, 512, (n, 20), generator=g)
    mask = torch.ones(n, 20, dtype=torch.long)
    mask[:, 11:] = 0
    return {
        "image": torch.rand(n, 3, 32, 32, generator=g),
        "dna": dna,
        "dna_mask": torch.ones(n, 133, dtype=torch.long),
        "text": text * mask,
        "text_mask": mask,
        "text_type": torch.zeros(n, 20, dtype=torch.long),
    }


def trained_like(model):
    """Random non-zero values in every trainable tensor (as after some training)."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1 + p)
    return model


@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny")


def embed(model, batch):
    model.eval()
    with torch.no_grad():
        return model(batch)


def test_save_writes_three_files_and_loads_back_exactly(cfg, tmp_path):
    model = trained_like(build_model(cfg.model, pretrained=False))
    out = save_checkpoint(model, tmp_path / "checkpoints" / "last", config=cfg, meta={"step": 12, "epoch": 1})
    assert out == tmp_path / "checkpoints" / "last"
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "meta.json", "model.safetensors"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["last"]  # no temporary folder left
    meta = json.loads((out / "meta.json").read_text())
    assert meta["package_version"] == __version__
    assert meta["name"] == "tiny" and meta["step"] == 12 and meta["epoch"] == 1
    assert meta["modalities"] == ["image", "dna", "text"] and meta["lora_scale"] == {
        "image": 1.0,
        "dna": 1.0,
        "text": 1.0,
    }
    assert read_checkpoint_config(out) == cfg
    assert read_checkpoint_config(out / "model.safetensors") == cfg

    fresh = build_model(replace(cfg.model, head_seed=5), pretrained=False)
    assert load_weights(fresh, out) == "bioclip"
    want, got = embed(model, tiny_batch()), embed(fresh, tiny_batch())
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=0, rtol=0)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value, atol=0, rtol=0)

    via_config = build_model(replace(cfg.model, checkpoint=str(out / "model.safetensors")), pretrained=False)
    torch.testing.assert_close(embed(via_config, tiny_batch())["dna"], want["dna"], atol=0, rtol=0)


def test_save_replaces_an_existing_checkpoint(cfg, tmp_path):
    model = build_model(cfg.model, pretrained=False)
    save_checkpoint(model, tmp_path / "best", config=None, meta={"step": 1})
    trained_like(model)
    save_checkpoint(model, tmp_path / "best", config=None, meta={"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    assert json.loads((tmp_path / "best" / "meta.json").read_text())["step"] == 2
    assert read_checkpoint_config(tmp_path / "best") is None
    fresh = build_model(cfg.model, pretrained=False)
    load_weights(fresh, tmp_path / "best")
    torch.testing.assert_close(fresh.image.head.weight, model.image.head.weight)


def test_lora_checkpoint_into_a_full_model_and_back(cfg, tmp_path):
    """Fine-tuning modes may differ between save and load: LoRA folds into the base weights, or resets."""
    lora_model = trained_like(build_model(cfg.model, pretrained=False))
    save_checkpoint(lora_model, tmp_path / "lora", config=cfg, meta={})
    full_cfg = replace(
        cfg.model,
        image=replace(cfg.model.image, finetune="full"),
        dna=replace(cfg.model.dna, finetune="full"),
        text=replace(cfg.model.text, finetune="full"),
    )
    full = build_model(full_cfg, pretrained=False)
    load_weights(full, tmp_path / "lora")
    want, got = embed(lora_model, tiny_batch()), embed(full, tiny_batch())
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=0)

    trained_like(full)
    save_checkpoint(full, tmp_path / "full", config=None, meta={})
    back = trained_like(build_model(cfg.model, pretrained=False))  # non-zero LoRA that must be reset
    load_weights(back, tmp_path / "full")
    want, got = embed(full, tiny_batch()), embed(back, tiny_batch())
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=0)


def test_lora_with_another_scale_is_folded_with_its_own_scale(cfg, tmp_path):
    model = trained_like(build_model(cfg.model, pretrained=False))  # r=2, alpha=2: scale 1
    save_checkpoint(model, tmp_path / "ckpt", config=None, meta={})
    assert read_weights(tmp_path / "ckpt").lora["image.vit.layers.0.attention.q_proj"].scale == 1.0
    other = replace(cfg.model, image=replace(cfg.model.image, lora=replace(cfg.model.image.lora, alpha=8.0)))
    target = build_model(other, pretrained=False)
    load_weights(target, tmp_path / "ckpt")
    torch.testing.assert_close(
        embed(target, tiny_batch())["image"], embed(model, tiny_batch())["image"], atol=1e-5, rtol=0
    )


def test_learned_logit_scale_round_trip(cfg, tmp_path):
    learned = replace(cfg.model, learn_logit_scale=True)
    model = build_model(learned, pretrained=False)
    with torch.no_grad():
        model.log_logit_scale.fill_(3.0)
    save_checkpoint(model, tmp_path / "ckpt", config=None, meta={})
    fresh = build_model(learned, pretrained=False)
    load_weights(fresh, tmp_path / "ckpt")
    assert fresh.logit_scale.item() == pytest.approx(torch.tensor(3.0).exp().item())
    fixed = build_model(cfg.model, pretrained=False)
    load_weights(fixed, tmp_path / "ckpt")  # a fixed-scale model keeps its scale
    assert fixed.logit_scale.item() == pytest.approx(1 / 0.07)


def test_checkpoint_of_other_shapes_or_modalities_is_refused(cfg, tmp_path):
    model = build_model(replace(cfg.model, modalities=["image", "dna"]), pretrained=False)
    save_checkpoint(model, tmp_path / "id", config=None, meta={})
    with pytest.raises(DataError, match="has no text encoder"):
        load_weights(build_model(cfg.model, pretrained=False), tmp_path / "id")
    wider = replace(cfg.model, output_dim=8, modalities=["image"])
    with pytest.raises(DataError, match=r"shape mismatch.*image\.head\.weight \[16, 32\] vs model \[8, 32\]"):
        load_weights(build_model(wider, pretrained=False), tmp_path / "id")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="without model.safetensors"):
        load_weights(model, tmp_path / "empty")


def test_saving_inside_merged_lora_is_refused(cfg, tmp_path):
    model = build_model(cfg.model, pretrained=False)
    with model.lora_merged(), pytest.raises(RuntimeError, match="lora_merged"):
        save_checkpoint(model, tmp_path / "x", config=None, meta={})
    assert not (tmp_path / "x").exists()
