"""The encoders, the CLIP wrapper and the fine-tuning modes, on the tiny preset's shapes (random weights)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from bioclip_cli.config import load_config
from bioclip_cli.errors import ConfigError
from bioclip_cli.models import BioClipModel, build_model, parameter_rows, parameter_table


@pytest.fixture(scope="module")
def tiny():
    return load_config("tiny").model


def tiny_batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    dna = torch.randint(3, 1027, (n, 133), generator=g)
    dna[:, 0] = 0
    dna_mask = torch.ones(n, 133, dtype=torch.long)
    dna_mask[:, 90:] = 0
    dna[:, 90:] = 2
    text = torch.randint(5, 512, (n, 20), generator=g)
    text_mask = torch.ones(n, 20, dtype=torch.long)
    text_mask[:, 9:] = 0
    text = text * text_mask
    return {
        "image": torch.rand(n, 3, 32, 32, generator=g),
        "dna": dna,
        "dna_mask": dna_mask,
        "text": text,
        "text_mask": text_mask,
        "text_type": torch.zeros(n, 20, dtype=torch.long),
        "index": torch.arange(n),
        "species": ["a"] * n,
    }


def test_forward_returns_normalised_embeddings_for_present_modalities(tiny):
    model = build_model(tiny, pretrained=False).eval()
    assert isinstance(model, BioClipModel)
    assert model.modalities == ("image", "dna", "text")
    b = tiny_batch()
    with torch.no_grad():
        out = model(b)
    assert set(out) == {"image", "dna", "text"}
    for emb in out.values():
        assert emb.shape == (4, 16)
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(4))
    partial = {k: v for k, v in b.items() if not k.startswith("text")}
    with torch.no_grad():
        assert set(model(partial)) == {"image", "dna"}
        torch.testing.assert_close(model.encode_image(b["image"]), out["image"])
        torch.testing.assert_close(model.encode_dna(b["dna"], b["dna_mask"]), out["dna"])
        torch.testing.assert_close(model.encode_text(b["text"], b["text_mask"], b["text_type"]), out["text"])


def test_model_without_a_modality_ignores_its_batch_keys(tiny):
    model = build_model(replace(tiny, modalities=["image", "dna"]), pretrained=False).eval()
    assert model.text is None and model.modalities == ("image", "dna")
    with torch.no_grad():
        assert set(model(tiny_batch())) == {"image", "dna"}
    with pytest.raises(ValueError, match="no text encoder"):
        model.encode_text(torch.zeros(1, 20, dtype=torch.long))


def test_compat_dna_pooling_sees_every_token_and_mean_pooling_masks_them(tiny):
    b = tiny_batch()
    other_pad = b["dna"].clone()
    other_pad[:, 90:] = 7  # different tokens where the mask is 0
    compat = build_model(tiny, pretrained=False).eval()
    assert compat.dna.pooling == "softmax-mean" and compat.dna.transform is not None
    with torch.no_grad():
        a = compat.encode_dna(b["dna"], b["dna_mask"])
        torch.testing.assert_close(compat.encode_dna(b["dna"], torch.ones_like(b["dna_mask"])), a)  # no mask used
        assert (compat.encode_dna(other_pad, b["dna_mask"]) - a).abs().max() > 1e-4  # padding counts
        # softmax-mean by hand from the backbone's hidden states
        hidden = compat.dna.bert(input_ids=b["dna"]).last_hidden_state
        probs = torch.softmax(compat.dna.head(compat.dna.transform(hidden)), dim=-1).mean(1)
        torch.testing.assert_close(a, torch.nn.functional.normalize(probs, dim=-1))

    fixed = build_model(replace(tiny, dna=replace(tiny.dna, pooling="mean")), pretrained=False).eval()
    assert fixed.dna.transform is None
    with torch.no_grad():
        a = fixed.encode_dna(b["dna"], b["dna_mask"])
        torch.testing.assert_close(fixed.encode_dna(other_pad, b["dna_mask"]), a, atol=1e-6, rtol=0)
        hidden = fixed.dna.bert(input_ids=b["dna"], attention_mask=b["dna_mask"]).last_hidden_state
        pooled = hidden[:, :90].mean(1)
        torch.testing.assert_close(a, torch.nn.functional.normalize(fixed.dna.head(pooled), dim=-1))


def test_text_mean_all_averages_padding_and_mean_does_not(tiny):
    b = tiny_batch()
    other_pad = b["text"].clone()
    other_pad[:, 9:] = 3
    compat = build_model(tiny, pretrained=False).eval()
    fixed = build_model(replace(tiny, text=replace(tiny.text, pooling="mean")), pretrained=False).eval()
    with torch.no_grad():
        a = compat.encode_text(b["text"], b["text_mask"], b["text_type"])
        hidden = compat.text.bert(input_ids=b["text"], attention_mask=b["text_mask"]).last_hidden_state
        torch.testing.assert_close(a, torch.nn.functional.normalize(compat.text.head(hidden.mean(1)), dim=-1))
        assert (compat.encode_text(other_pad, b["text_mask"], b["text_type"]) - a).abs().max() > 1e-4
        m = fixed.encode_text(b["text"], b["text_mask"], b["text_type"])
        torch.testing.assert_close(fixed.encode_text(other_pad, b["text_mask"], b["text_type"]), m, atol=1e-6, rtol=0)


def test_lora_mode_trains_only_adapters_and_heads(tiny):
    model = build_model(tiny, pretrained=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or ".head." in n for n in trainable)
    assert "image.vit.layers.0.attention.q_proj.lora_A.default.weight" in trainable
    assert "image.vit.layers.0.attention.v_proj.lora_B.default.weight" in trainable
    assert "dna.bert.encoder.layer.1.attention.self.query.lora_A.default.weight" in trainable
    assert not any("k_proj.lora" in n or "self.key.lora" in n for n in trainable)
    assert "dna.transform.dense.weight" not in trainable
    # B starts at zero: the adapted model equals its base model
    assert all(p.abs().sum() == 0 for n, p in model.named_parameters() if ".lora_B." in n)
    loss = sum(e.sum() for e in model(tiny_batch()).values())
    loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
    assert model.image.head.weight.grad.abs().sum() > 0
    assert model.dna.bert.encoder.layer[0].attention.self.value.lora_A["default"].weight.grad is not None


def test_full_and_frozen_modes(tiny):
    full = build_model(replace(tiny, image=replace(tiny.image, finetune="full")), pretrained=False)
    assert all(p.requires_grad for p in full.image.parameters())
    assert not any(".lora_" in n for n, _ in full.image.named_parameters())
    frozen = build_model(replace(tiny, text=replace(tiny.text, finetune="frozen")), pretrained=False)
    assert not any(p.requires_grad for p in frozen.text.parameters())
    rows = {r["encoder"]: r for r in parameter_table(frozen)}
    assert rows["text"]["trainable"] == 0 and rows["text"]["head"] == 32 * 16 + 16


def test_lora_rank_alpha_and_targets_follow_the_config(tiny):
    cfg = replace(
        tiny,
        dna=replace(tiny.dna, lora=replace(tiny.dna.lora, r=3, alpha=6.0, target_modules=["query", "key", "value"])),
    )
    model = build_model(cfg, pretrained=False)
    layer = model.dna.bert.encoder.layer[0].attention.self.key
    assert layer.lora_A["default"].weight.shape == (3, 32) and layer.scaling["default"] == 2.0
    image_cfg = replace(tiny, image=replace(tiny.image, lora=replace(tiny.image.lora, target_modules=["qkv"])))
    with pytest.raises(ConfigError, match=r"model\.image\.lora\.target_modules") as info:
        build_model(image_cfg, pretrained=False)
    assert "q_proj" in str(info.value)


def test_merged_lora_gives_the_same_embeddings(tiny):
    model = build_model(tiny, pretrained=False).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.2)
        b = tiny_batch()
        before = model(b)
        with model.lora_merged():
            merged = model(b)
        after = model(b)
    for name in before:
        torch.testing.assert_close(merged[name], before[name], atol=1e-5, rtol=0)
        torch.testing.assert_close(after[name], before[name])
        assert (before[name] - build_model(tiny, pretrained=False).eval()(b)[name]).abs().max() > 1e-4


def _adapted(cfg, seed=0):
    """The tiny model with non-zero LoRA B (as after training), the same for the same seed."""
    torch.manual_seed(seed)  # the random backbones come from the global RNG
    model = build_model(cfg, pretrained=False).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def test_lora_merged_restores_the_weights_bit_for_bit_and_training_goes_on_unchanged(tiny):
    model, never_merged = _adapted(tiny), _adapted(tiny)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    b = tiny_batch()
    with torch.inference_mode():
        plain = model(b)
        with model.lora_merged():
            merged = model(b)
            assert any(not torch.equal(t, before[n]) for n, t in model.state_dict().items())  # really merged
    for name in plain:
        torch.testing.assert_close(merged[name], plain[name], atol=1e-6, rtol=0)
    assert [n for n, t in model.state_dict().items() if not torch.equal(t, before[n])] == []
    for m in (model, never_merged):  # one Adam step: the same from the restored weights as from never merged
        opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
        out = m(b)
        (out["image"] @ out["dna"].T + out["dna"] @ out["text"].T).sum().backward()
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), never_merged.parameters()))


def test_lora_merged_without_lora_changes_nothing(tiny):
    full = replace(tiny, image=replace(tiny.image, finetune="full"), dna=replace(tiny.dna, finetune="frozen"),
                   text=replace(tiny.text, finetune="full"))  # fmt: skip
    model = build_model(full, pretrained=False).eval()
    b = tiny_batch()
    with torch.no_grad():
        plain = model(b)
        with model.lora_merged():
            merged = model(b)
    assert all(torch.equal(merged[name], plain[name]) for name in plain)


def test_heads_are_seeded_per_modality(tiny):
    a = build_model(tiny, pretrained=False)
    b = build_model(replace(tiny, modalities=["dna", "image"]), pretrained=False)
    c = build_model(replace(tiny, head_seed=1), pretrained=False)
    torch.testing.assert_close(a.image.head.weight, b.image.head.weight)
    torch.testing.assert_close(a.dna.head.weight, b.dna.head.weight)
    assert not torch.equal(a.image.head.weight, c.image.head.weight)
    torch.manual_seed(123)
    x = torch.rand(1)
    torch.manual_seed(123)
    build_model(tiny, pretrained=False)  # backbones use the global RNG, heads do not reset it
    assert not torch.equal(torch.rand(1), x)


def test_logit_scale_fixed_or_learned(tiny):
    fixed = build_model(tiny, pretrained=False)
    assert fixed.logit_scale.item() == pytest.approx(1 / 0.07)
    assert not fixed.logit_scale.requires_grad
    assert not any("logit" in k for k in fixed.state_dict())
    learned = build_model(replace(tiny, learn_logit_scale=True), pretrained=False)
    assert isinstance(learned.log_logit_scale, torch.nn.Parameter)
    assert learned.log_logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert learned.logit_scale.item() == pytest.approx(1 / 0.07)
    assert parameter_table(learned)[-2]["encoder"] == "logit scale"


def test_parameter_rows_on_meta_equal_a_real_build():
    cfg = load_config("tiny")
    real = parameter_table(build_model(cfg.model, pretrained=False))
    assert parameter_rows(cfg.model) == real
    rows = {r["encoder"]: r for r in real}
    # tiny: hidden 32, r=2 on query+value of 2 layers: 2 * 2 * (2*32 + 32*2) = 512 LoRA; head 32*16+16 = 528
    assert rows["image"]["lora"] == 512 and rows["image"]["head"] == 528 and rows["image"]["trainable"] == 1040
    assert rows["all"]["trainable"] == 3 * 1040


def test_pretrained_weights_from_local_folders(tiny, tmp_path):
    """`weights` may name a local transformers folder: ViT, BERT, and a BertForMaskedLM for BarcodeBERT."""
    from transformers import BertForMaskedLM, BertModel, ViTModel

    from bioclip_cli.models.dna import dna_bert_config
    from bioclip_cli.models.image import vit_config
    from bioclip_cli.models.text import text_bert_config

    vit_cfg = vit_config(tiny.image)
    vit_cfg.layer_norm_eps = 1e-12  # as google/vit-base-patch16-224 states; the preset's 1e-6 must win
    ViTModel(vit_cfg, add_pooling_layer=False).save_pretrained(tmp_path / "vit")
    BertModel(text_bert_config(tiny.text)).save_pretrained(tmp_path / "bert")  # with a pooler: dropped
    BertForMaskedLM(dna_bert_config(tiny.dna)).save_pretrained(tmp_path / "barcodebert")
    cfg = replace(
        tiny,
        image=replace(tiny.image, weights=str(tmp_path / "vit")),
        text=replace(tiny.text, weights=str(tmp_path / "bert")),
        dna=replace(tiny.dna, weights=str(tmp_path / "barcodebert")),
    )
    model = build_model(cfg, pretrained=True)
    saved_vit = ViTModel.from_pretrained(tmp_path / "vit", add_pooling_layer=False)
    torch.testing.assert_close(
        model.image.vit.layers[1].mlp.fc1.weight, saved_vit.layers[1].mlp.fc1.weight, atol=0, rtol=0
    )
    assert model.image.vit.config.layer_norm_eps == 1e-6
    saved_mlm = BertForMaskedLM.from_pretrained(tmp_path / "barcodebert")
    torch.testing.assert_close(
        model.dna.transform.dense.weight, saved_mlm.cls.predictions.transform.dense.weight, atol=0, rtol=0
    )
    torch.testing.assert_close(
        model.dna.bert.encoder.layer[1].attention.self.query.base_layer.weight,
        saved_mlm.bert.encoder.layer[1].attention.self.query.weight,
        atol=0,
        rtol=0,
    )
    saved_bert = BertModel.from_pretrained(tmp_path / "bert")
    torch.testing.assert_close(
        model.text.bert.embeddings.word_embeddings.weight, saved_bert.embeddings.word_embeddings.weight, atol=0, rtol=0
    )
    assert not hasattr(model.text.bert, "pooler") or model.text.bert.pooler is None

    wrong = replace(cfg, image=replace(cfg.image, num_layers=3))
    with pytest.raises(ConfigError, match=r"model\.image\.num_layers is 3 but the weights .* have num_hidden_layers=2"):
        build_model(wrong, pretrained=True)


def test_gradient_checkpointing_and_bf16_autocast(tiny):
    model = build_model(tiny, pretrained=False)
    model.enable_gradient_checkpointing()
    assert all(enc.backbone.is_activation_checkpointing for enc in model.encoders().values())
    model.train()
    b = tiny_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(b)
    assert all(e.dtype == torch.float32 for e in out.values())
    sum(e.sum() for e in out.values()).backward()
    assert model.text.bert.encoder.layer[0].attention.self.query.lora_A["default"].weight.grad is not None
