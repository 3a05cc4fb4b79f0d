"""Published layouts (BIOSCAN-CLIP v1, CLIBD v2, BarcodeBERT model_41.pth) -> our model, checked against a
forward pass written here by hand from the same random tensors (timm ViT with fused qkv + LoRA, BERT with
w + w_b.w_a, softmax-mean DNA pooling, mean-all text pooling)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from bioclip_cli.config.schema import DnaEncoderConfig, ImageEncoderConfig, LoraConfig, ModelConfig, TextEncoderConfig
from bioclip_cli.errors import DataError, MissingArtifact
from bioclip_cli.models import build_model, load_weights

# Tiny widths, real depths (12 ViT blocks, 12 DNA layers, 4 text layers) and real vocabularies/positions,
# so the published files have exactly their real entry counts.
IMG = dict(hidden=16, heads=2, ffn=32, depth=12, size=16, patch=8)
DNA = dict(hidden=16, heads=2, ffn=32, depth=12, vocab=1027, positions=512)
TXT = dict(hidden=12, heads=2, ffn=24, depth=4, vocab=30522, positions=512)
OUT = 10
RANK = 4
ATOL = 1e-5


def model_config(modalities=("image", "dna", "text"), finetune="lora", learn_logit_scale=False, checkpoint=None):
    lora = LoraConfig(r=RANK)
    return ModelConfig(
        modalities=list(modalities),
        output_dim=OUT,
        image=ImageEncoderConfig(
            hidden_size=IMG["hidden"],
            num_layers=IMG["depth"],
            num_heads=IMG["heads"],
            intermediate_size=IMG["ffn"],
            image_size=IMG["size"],
            patch_size=IMG["patch"],
            weights=None,
            finetune=finetune,
            lora=lora,
        ),
        dna=DnaEncoderConfig(
            hidden_size=DNA["hidden"],
            num_layers=DNA["depth"],
            num_heads=DNA["heads"],
            intermediate_size=DNA["ffn"],
            weights=None,
            finetune=finetune,
            lora=lora,
        ),
        text=TextEncoderConfig(
            hidden_size=TXT["hidden"],
            num_layers=TXT["depth"],
            num_heads=TXT["heads"],
            intermediate_size=TXT["ffn"],
            weights=None,
            finetune=finetune,
            lora=lora,
        ),
        learn_logit_scale=learn_logit_scale,
        checkpoint=checkpoint,
    )


# ------------------------------------------------------------------------------ published state dicts


class _Rand:
    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)

    def __call__(self, *shape, std=0.2, mean=0.0):
        return torch.randn(*shape, generator=self.g) * std + mean


def vit_state(r: _Rand, prefix: str) -> dict:
    d, f, p = IMG["hidden"], IMG["ffn"], IMG["patch"]
    n = (IMG["size"] // p) ** 2 + 1
    sd = {
        "cls_token": r(1, 1, d),
        "pos_embed": r(1, n, d),
        "patch_embed.proj.weight": r(d, 3, p, p),
        "patch_embed.proj.bias": r(d),
    }
    for i in range(IMG["depth"]):
        b = f"blocks.{i}."
        sd.update(
            {
                b + "norm1.weight": r(d, mean=1.0, std=0.1),
                b + "norm1.bias": r(d, std=0.1),
                b + "attn.qkv.qkv.weight": r(3 * d, d),
                b + "attn.qkv.qkv.bias": r(3 * d, std=0.1),
                b + "attn.qkv.linear_a_q.weight": r(RANK, d),
                b + "attn.qkv.linear_b_q.weight": r(d, RANK),
                b + "attn.qkv.linear_a_v.weight": r(RANK, d),
                b + "attn.qkv.linear_b_v.weight": r(d, RANK),
                b + "attn.proj.weight": r(d, d),
                b + "attn.proj.bias": r(d, std=0.1),
                b + "norm2.weight": r(d, mean=1.0, std=0.1),
                b + "norm2.bias": r(d, std=0.1),
                b + "mlp.fc1.weight": r(f, d),
                b + "mlp.fc1.bias": r(f, std=0.1),
                b + "mlp.fc2.weight": r(d, f),
                b + "mlp.fc2.bias": r(d, std=0.1),
            }
        )
    sd.update({"norm.weight": r(d, mean=1.0, std=0.1), "norm.bias": r(d, std=0.1)})
    sd.update({"head.weight": r(OUT, d), "head.bias": r(OUT, std=0.1)})
    return {prefix + k: v for k, v in sd.items()}


def bert_state(r: _Rand, dims: dict, prefix: str, split: bool) -> dict:
    """BertModel names; query/value split into .w/.w_a/.w_b when `split` (the v1 LoRA)."""
    d, f = dims["hidden"], dims["ffn"]
    sd = {
        "embeddings.word_embeddings.weight": r(dims["vocab"], d, std=0.5),
        "embeddings.position_embeddings.weight": r(dims["positions"], d, std=0.5),
        "embeddings.token_type_embeddings.weight": r(2, d, std=0.5),
        "embeddings.LayerNorm.weight": r(d, mean=1.0, std=0.1),
        "embeddings.LayerNorm.bias": r(d, std=0.1),
        "embeddings.position_ids": torch.arange(dims["positions"]).unsqueeze(0),
    }
    for i in range(dims["depth"]):
        b = f"encoder.layer.{i}."
        for proj in ("query", "key", "value"):
            name = b + f"attention.self.{proj}."
            if split and proj != "key":
                sd.update(
                    {
                        name + "w.weight": r(d, d),
                        name + "w.bias": r(d, std=0.1),
                        name + "w_a.weight": r(RANK, d),
                        name + "w_b.weight": r(d, RANK),
                    }
                )
            else:
                sd.update({name + "weight": r(d, d), name + "bias": r(d, std=0.1)})
        sd.update(
            {
                b + "attention.output.dense.weight": r(d, d),
                b + "attention.output.dense.bias": r(d, std=0.1),
                b + "attention.output.LayerNorm.weight": r(d, mean=1.0, std=0.1),
                b + "attention.output.LayerNorm.bias": r(d, std=0.1),
                b + "intermediate.dense.weight": r(f, d),
                b + "intermediate.dense.bias": r(f, std=0.1),
                b + "output.dense.weight": r(d, f),
                b + "output.dense.bias": r(d, std=0.1),
                b + "output.LayerNorm.weight": r(d, mean=1.0, std=0.1),
                b + "output.LayerNorm.bias": r(d, std=0.1),
            }
        )
    return {prefix + k: v for k, v in sd.items()}


def dna_state(r: _Rand, prefix: str, split: bool) -> dict:
    d = DNA["hidden"]
    sd = bert_state(r, DNA, prefix + "bert.", split)
    sd.update(
        {
            prefix + "cls.predictions.bias": r(DNA["vocab"]),  # the old MLM bias: unused
            prefix + "cls.predictions.transform.dense.weight": r(d, d),
            prefix + "cls.predictions.transform.dense.bias": r(d, std=0.1),
            prefix + "cls.predictions.transform.LayerNorm.weight": r(d, mean=1.0, std=0.1),
            prefix + "cls.predictions.transform.LayerNorm.bias": r(d, std=0.1),
            prefix + "cls.predictions.decoder.weight": r(OUT, d),  # the new head [out, hidden]
            prefix + "cls.predictions.decoder.bias": r(OUT, std=0.1),
        }
    )
    return sd


def text_state(r: _Rand, prefix: str, split: bool) -> dict:
    d = TXT["hidden"]
    sd = bert_state(r, TXT, prefix, split)
    sd.update({prefix + "pooler.dense.weight": r(d, d), prefix + "pooler.dense.bias": r(d)})
    sd.update({"language_encoder.proj.weight": r(OUT, d), "language_encoder.proj.bias": r(OUT, std=0.1)})
    return sd


def published_v1(seed=0, modalities=("image", "dna", "text")) -> dict:
    r = _Rand(seed)
    sd = {}
    if "image" in modalities:
        sd.update(vit_state(r, "image_encoder.lora_vit."))
    if "dna" in modalities:
        sd.update(dna_state(r, "dna_encoder.lora_barcode_bert.", split=True))
    if "text" in modalities:
        sd.update(text_state(r, "language_encoder.lora_bert.", split=True))
    return sd


def published_v2(seed=1, log_scale=math.log(20.0)) -> dict:
    """CLIBD full fine-tuning: base_* inner names, plain BERT names, ViT still with its LoRA, logit_scale."""
    r = _Rand(seed)
    sd = vit_state(r, "image_encoder.base_image_encoder.")
    sd.update(dna_state(r, "dna_encoder.base_dna_encoder.", split=False))
    sd.update(text_state(r, "language_encoder.base_language_encoder.", split=False))
    sd["logit_scale"] = torch.tensor(log_scale)
    return sd


# ------------------------------------------------------------------------------ the forward, by hand


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def attention(q, k, v, heads, key_mask=None):
    bsz, n, d = q.shape
    dh = d // heads

    def split(t):
        return t.reshape(bsz, n, heads, dh).transpose(1, 2)

    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(dh)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask.bool()[:, None, None, :], float("-inf"))
    out = scores.softmax(-1) @ split(v)
    return out.transpose(1, 2).reshape(bsz, n, d)


def hand_image(sd, prefix, pixels):
    def t(name):
        return sd[prefix + name]

    d, p = IMG["hidden"], IMG["patch"]
    bsz = pixels.shape[0]
    patches = pixels.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(bsz, -1, 3 * p * p)
    x = patches @ t("patch_embed.proj.weight").reshape(d, -1).T + t("patch_embed.proj.bias")
    x = torch.cat([t("cls_token").expand(bsz, 1, d), x], dim=1) + t("pos_embed")
    for i in range(IMG["depth"]):
        b = f"blocks.{i}."
        h = layer_norm(x, t(b + "norm1.weight"), t(b + "norm1.bias"), 1e-6)
        qkv = h @ t(b + "attn.qkv.qkv.weight").T + t(b + "attn.qkv.qkv.bias")
        q, k, v = qkv[..., :d], qkv[..., d : 2 * d], qkv[..., 2 * d :]
        q = q + (h @ t(b + "attn.qkv.linear_a_q.weight").T) @ t(b + "attn.qkv.linear_b_q.weight").T
        v = v + (h @ t(b + "attn.qkv.linear_a_v.weight").T) @ t(b + "attn.qkv.linear_b_v.weight").T
        x = x + attention(q, k, v, IMG["heads"]) @ t(b + "attn.proj.weight").T + t(b + "attn.proj.bias")
        h = layer_norm(x, t(b + "norm2.weight"), t(b + "norm2.bias"), 1e-6)
        h = gelu(h @ t(b + "mlp.fc1.weight").T + t(b + "mlp.fc1.bias"))
        x = x + h @ t(b + "mlp.fc2.weight").T + t(b + "mlp.fc2.bias")
    x = layer_norm(x, t("norm.weight"), t("norm.bias"), 1e-6)
    return F.normalize(x[:, 0] @ t("head.weight").T + t("head.bias"), dim=-1)


def hand_bert(sd, prefix, dims, ids, type_ids=None, key_mask=None):
    def t(name):
        return sd[prefix + name]

    def linear(name, h):
        if prefix + name + ".w.weight" in sd:  # upstream LoRA: W + B.A, unscaled
            w = t(name + ".w.weight") + t(name + ".w_b.weight") @ t(name + ".w_a.weight")
            return h @ w.T + t(name + ".w.bias")
        return h @ t(name + ".weight").T + t(name + ".bias")

    type_ids = torch.zeros_like(ids) if type_ids is None else type_ids
    x = (
        t("embeddings.word_embeddings.weight")[ids]
        + t("embeddings.token_type_embeddings.weight")[type_ids]
        + t("embeddings.position_embeddings.weight")[: ids.shape[1]]
    )
    x = layer_norm(x, t("embeddings.LayerNorm.weight"), t("embeddings.LayerNorm.bias"), 1e-12)
    for i in range(dims["depth"]):
        b = f"encoder.layer.{i}."
        q, k, v = (linear(b + f"attention.self.{n}", x) for n in ("query", "key", "value"))
        a = linear(b + "attention.output.dense", attention(q, k, v, dims["heads"], key_mask))
        x = layer_norm(
            x + a, t(b + "attention.output.LayerNorm.weight"), t(b + "attention.output.LayerNorm.bias"), 1e-12
        )
        h = linear(b + "output.dense", gelu(linear(b + "intermediate.dense", x)))
        x = layer_norm(x + h, t(b + "output.LayerNorm.weight"), t(b + "output.LayerNorm.bias"), 1e-12)
    return x


def hand_dna(sd, prefix, ids, head=None):
    """Compat softmax-mean: no attention mask; transform -> head -> softmax over channels -> mean over all."""
    h = hand_bert(sd, prefix + "bert.", DNA, ids)
    p = prefix + "cls.predictions."
    h = layer_norm(
        gelu(h @ sd[p + "transform.dense.weight"].T + sd[p + "transform.dense.bias"]),
        sd[p + "transform.LayerNorm.weight"],
        sd[p + "transform.LayerNorm.bias"],
        1e-12,
    )
    w, b = head if head is not None else (sd[p + "decoder.weight"], sd[p + "decoder.bias"])
    return F.normalize(torch.softmax(h @ w.T + b, dim=-1).mean(dim=1), dim=-1)


def hand_text(sd, prefix, ids, mask, type_ids):
    """Compat mean-all: the mask goes into attention, the mean covers all positions."""
    h = hand_bert(sd, prefix, TXT, ids, type_ids, key_mask=mask)
    return F.normalize(h.mean(dim=1) @ sd["language_encoder.proj.weight"].T + sd["language_encoder.proj.bias"], dim=-1)


def batch(seed=5, n=3):
    g = torch.Generator().manual_seed(seed)
    dna = torch.randint(3, 1027, (n, 133), generator=g)
    dna[:, 0] = 0
    dna[:, 100:] = 2  # padding k-mers are <UNK> tokens the compat model sees
    dna_mask = torch.ones(n, 133, dtype=torch.long)
    dna_mask[:, 100:] = 0
    text = torch.randint(1000, 30522, (n, 20), generator=g)
    text_mask = torch.ones(n, 20, dtype=torch.long)
    text_mask[0, 7:] = 0
    text_mask[1, 12:] = 0
    text = text * text_mask
    text_type = torch.zeros(n, 20, dtype=torch.long)
    return {
        "image": torch.rand(n, 3, IMG["size"], IMG["size"], generator=g),
        "dna": dna,
        "dna_mask": dna_mask,
        "text": text,
        "text_mask": text_mask,
        "text_type": text_type,
        "index": torch.arange(n),
    }


def expected_v1(sd, b):
    return {
        "image": hand_image(sd, "image_encoder.lora_vit.", b["image"]),
        "dna": hand_dna(sd, "dna_encoder.lora_barcode_bert.", b["dna"]),
        "text": hand_text(sd, "language_encoder.lora_bert.", b["text"], b["text_mask"], b["text_type"]),
    }


@pytest.fixture(scope="module")
def v1_file(tmp_path_factory):
    sd = published_v1()
    path = tmp_path_factory.mktemp("published") / "image_dna_text.pth"
    torch.save(sd, path)
    return path, sd


# ------------------------------------------------------------------------------------------ tests


def test_v1_layout_has_the_published_entry_counts(v1_file):
    _, sd = v1_file
    assert sum(k.startswith("image_encoder.") for k in sd) == 200
    assert sum(k.startswith("dna_encoder.") for k in sd) == 253
    assert sum(k.startswith("language_encoder.") for k in sd) == 90
    assert len(sd) == 543


def test_lora_terms_and_compat_pooling_are_material(v1_file):
    """Guards the comparison below: dropping the LoRA updates or masking the compat poolings changes
    the hand-computed embeddings far beyond the tolerance."""
    _, sd = v1_file
    b = batch()
    want = expected_v1(sd, b)
    no_lora = {k: (torch.zeros_like(v) if ".linear_b_" in k or ".w_b." in k else v) for k, v in sd.items()}
    plain = expected_v1(no_lora, b)
    for name in want:
        assert (plain[name] - want[name]).abs().max() > 100 * ATOL
    masked_mean_text = hand_bert(sd, "language_encoder.lora_bert.", TXT, b["text"], b["text_type"], b["text_mask"])
    m = b["text_mask"].unsqueeze(-1).float()
    masked = (masked_mean_text * m).sum(1) / m.sum(1)
    masked = F.normalize(masked @ sd["language_encoder.proj.weight"].T + sd["language_encoder.proj.bias"], dim=-1)
    assert (masked - want["text"]).abs().max() > 100 * ATOL


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_v1_checkpoint_matches_the_hand_forward(v1_file, finetune):
    path, sd = v1_file
    model = build_model(model_config(finetune=finetune), pretrained=False).eval()
    assert load_weights(model, path) == "bioscan-clip-v1"
    b = batch()
    with torch.no_grad():
        got = model(b)
    want = expected_v1(sd, b)
    assert set(got) == {"image", "dna", "text"}
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=ATOL, rtol=0)
    if finetune == "lora":  # the adapters were copied, not folded into the base weights
        q = model.image.vit.layers[3].attention.q_proj
        torch.testing.assert_close(
            q.lora_A["default"].weight, sd["image_encoder.lora_vit.blocks.3.attn.qkv.linear_a_q.weight"]
        )
        torch.testing.assert_close(q.base_layer.weight, sd["image_encoder.lora_vit.blocks.3.attn.qkv.qkv.weight"][:16])
        v = model.text.bert.encoder.layer[2].attention.self.value
        torch.testing.assert_close(
            v.lora_B["default"].weight, sd["language_encoder.lora_bert.encoder.layer.2.attention.self.value.w_b.weight"]
        )


def test_v1_checkpoint_given_as_model_checkpoint_needs_no_encoder_download(v1_file):
    path, sd = v1_file
    cfg = model_config(checkpoint=str(path))
    # unreachable pretrained sources: the checkpoint covers every encoder, so none is fetched
    cfg = replace(
        cfg,
        image=replace(cfg.image, weights="nobody/no-such-vit"),
        text=replace(cfg.text, weights="nobody/no-such-bert"),
    )
    model = build_model(cfg, pretrained=True).eval()
    b = batch(seed=9, n=2)
    with torch.no_grad():
        got = model(b)
    want = expected_v1(sd, b)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=ATOL, rtol=0)


def test_v2_clibd_checkpoint_into_full_and_lora_models(tmp_path):
    sd = published_v2()
    path = tmp_path / "best.pth"
    torch.save(sd, path)
    b = batch(seed=11)
    want = {
        "image": hand_image(sd, "image_encoder.base_image_encoder.", b["image"]),
        "dna": hand_dna(sd, "dna_encoder.base_dna_encoder.", b["dna"]),
        "text": hand_text(sd, "language_encoder.base_language_encoder.", b["text"], b["text_mask"], b["text_type"]),
    }
    for finetune in ("full", "lora"):
        model = build_model(model_config(finetune=finetune, learn_logit_scale=True), pretrained=False).eval()
        assert load_weights(model, path) == "clibd-v2"
        assert model.logit_scale.item() == pytest.approx(20.0, rel=1e-6)
        with torch.no_grad():
            got = model(b)
        for name in want:
            torch.testing.assert_close(got[name], want[name], atol=ATOL, rtol=0)
        if finetune == "lora":  # the BERTs had no adapters: ours start at B = 0
            assert model.dna.bert.encoder.layer[0].attention.self.query.lora_B["default"].weight.abs().sum() == 0


def test_image_dna_checkpoint_cannot_fill_a_text_model(tmp_path):
    path = tmp_path / "image_dna.pth"
    torch.save(published_v1(modalities=("image", "dna")), path)
    with pytest.raises(DataError, match="no text encoder"):
        load_weights(build_model(model_config(), pretrained=False), path)
    model = build_model(model_config(modalities=("image", "dna")), pretrained=False)
    assert load_weights(model, path) == "bioscan-clip-v1"


def test_unknown_layout_lists_unexpected_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.blocks.0.weight": torch.zeros(2), "fc.bias": torch.zeros(2)}, path)
    model = build_model(model_config(modalities=("dna",)), pretrained=False)
    with pytest.raises(DataError, match=r"unexpected keys encoder\.blocks\.0\.weight, fc\.bias"):
        load_weights(model, path)


def test_published_file_with_missing_or_unexpected_entries_is_refused(v1_file, tmp_path):
    _, sd = v1_file
    model = build_model(model_config(), pretrained=False)
    bad = dict(sd)
    del bad["dna_encoder.lora_barcode_bert.bert.encoder.layer.3.output.dense.bias"]
    torch.save(bad, tmp_path / "missing.pth")
    with pytest.raises(DataError, match=r"missing 1 key\(s\): dna\.bert\.encoder\.layer\.3\.output\.dense\.bias"):
        load_weights(model, tmp_path / "missing.pth")
    bad = dict(sd)
    bad["image_encoder.lora_vit.blocks.0.attn.extra.weight"] = torch.zeros(3)
    torch.save(bad, tmp_path / "extra.pth")
    with pytest.raises(
        DataError, match=r"unexpected 1 key\(s\): image_encoder\.lora_vit\.blocks\.0\.attn\.extra\.weight"
    ):
        load_weights(model, tmp_path / "extra.pth")


class NotATensor:
    pass


def test_pth_needing_more_than_tensors_is_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"model": NotATensor(), "w": torch.zeros(1)}, path)
    with pytest.raises(DataError, match="is refused") as info:
        load_weights(build_model(model_config(modalities=("dna",)), pretrained=False), path)
    assert "weights_only" in str(info.value)
    assert "NotATensor" in str(info.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="is not a readable PyTorch state dict"):
        load_weights(build_model(model_config(modalities=("dna",)), pretrained=False), garbage)
    truncated = tmp_path / "truncated.pth"
    torch.save({"w": torch.zeros(100)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(DataError, match="is not a readable PyTorch file"):
        load_weights(build_model(model_config(modalities=("dna",)), pretrained=False), truncated)


def test_missing_checkpoint_names_the_download_command(tmp_path):
    with pytest.raises(MissingArtifact) as info:
        build_model(model_config(modalities=("dna",), checkpoint=str(tmp_path / "absent.pth")), pretrained=False)
    assert "bioclip download checkpoints" in info.value.hint


# ------------------------------------------------------------------------------------------ BarcodeBERT


def barcodebert_file(tmp_path, seed=3, extra=None, drop=None):
    """A `model_41.pth`-style BertForMaskedLM state dict: `module.` prefix, position_ids, vocab decoder."""
    r = _Rand(seed)
    sd = dna_state(r, "", split=False)
    sd["cls.predictions.decoder.weight"] = r(DNA["vocab"], DNA["hidden"])
    sd["cls.predictions.decoder.bias"] = r(DNA["vocab"])
    sd = {"module." + k: v for k, v in sd.items()}
    sd.update(extra or {})
    for key in drop or ():
        del sd[key]
    path = tmp_path / "model_41.pth"
    torch.save(sd, path)
    return path, {k[len("module.") :]: v for k, v in sd.items()}


def test_barcodebert_state_dict_loads_into_the_dna_encoder(tmp_path):
    path, sd = barcodebert_file(tmp_path)
    assert "bert.embeddings.position_ids" in sd
    model = build_model(model_config(modalities=("dna",)), pretrained=False).eval()
    head = (model.dna.head.weight.detach().clone(), model.dna.head.bias.detach().clone())
    assert load_weights(model, path) == "barcodebert"
    b = batch(seed=2)
    with torch.no_grad():
        got = model.encode_dna(b["dna"], b["dna_mask"])
    torch.testing.assert_close(got, hand_dna(sd, "", b["dna"], head=head), atol=ATOL, rtol=0)

    # the same file as the preset's pretrained DNA weights
    cfg = model_config(modalities=("dna",))
    cfg = replace(cfg, dna=replace(cfg.dna, weights=str(path)))
    built = build_model(cfg, pretrained=True).eval()
    with torch.no_grad():
        again = built.encode_dna(b["dna"], b["dna_mask"])
    torch.testing.assert_close(again, got, atol=1e-6, rtol=0)


def test_barcodebert_missing_or_unexpected_key_is_an_error_naming_it(tmp_path):
    model = build_model(model_config(modalities=("dna",)), pretrained=False)
    path, _ = barcodebert_file(tmp_path, drop=["module.bert.encoder.layer.5.attention.self.key.weight"])
    with pytest.raises(
        DataError, match=r"missing 1 key\(s\): dna\.bert\.encoder\.layer\.5\.attention\.self\.key\.weight"
    ):
        load_weights(model, path)
    path, _ = barcodebert_file(tmp_path, extra={"module.bert.pooler.dense.weight": torch.zeros(16, 16)})
    with pytest.raises(DataError, match=r"unexpected 1 key\(s\): bert\.pooler\.dense\.weight"):
        load_weights(model, path)


def test_missing_barcodebert_file_names_the_download_command(tmp_path):
    cfg = model_config(modalities=("dna",))
    cfg = replace(cfg, dna=replace(cfg.dna, weights=str(tmp_path / "model_41.pth")))
    with pytest.raises(MissingArtifact) as info:
        build_model(cfg, pretrained=True)
    assert "model_41.pth" in info.value.message
    assert "bioclip download encoders" in info.value.hint


def test_unreachable_hub_weights_name_the_source_and_command():
    cfg = model_config(modalities=("image",))
    cfg = replace(cfg, image=replace(cfg.image, weights="google/vit-base-patch16-224"))
    with pytest.raises(MissingArtifact) as info:
        build_model(cfg, pretrained=True)
    assert "google/vit-base-patch16-224" in info.value.message
    assert "bioclip download encoders" in info.value.hint
