"""`build_model(model_cfg)`: encoders (pretrained or random), seeded heads, fine-tuning modes, checkpoint."""

from __future__ import annotations

import torch
from torch import nn

from bioclip_cli.config.schema import MODALITIES, ModelConfig
from bioclip_cli.models.checkpoint import assign_loaded, read_weights
from bioclip_cli.models.clip import BioClipModel
from bioclip_cli.models.dna import DnaEncoder, barcodebert_source_weights, dna_backbone
from bioclip_cli.models.image import ImageEncoder, vit_backbone
from bioclip_cli.models.lora import apply_finetune
from bioclip_cli.models.text import TextEncoder, text_backbone
from bioclip_cli.models.weight_set import assign_weights


def seeded_head(in_features: int, out_features: int, seed: int) -> nn.Linear:
    """A new Linear with nn.Linear's default init, drawn from its own seed (the global RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(in_features, out_features)


def head_seed(model_cfg: ModelConfig, modality: str) -> int:
    """Each modality's head gets its own seed, the same whichever other modalities are present."""
    return model_cfg.head_seed * len(MODALITIES) + MODALITIES.index(modality)


def build_encoder(model_cfg: ModelConfig, modality: str, *, pretrained: bool) -> nn.Module:
    """One encoder with its new head, before fine-tuning modes are applied."""
    cfg = getattr(model_cfg, modality)
    key = f"model.{modality}"
    head = seeded_head(cfg.hidden_size, model_cfg.output_dim, head_seed(model_cfg, modality))
    if modality == "image":
        return ImageEncoder(vit_backbone(cfg, pretrained=pretrained, key=key), head)
    if modality == "text":
        return TextEncoder(text_backbone(cfg, pretrained=pretrained, key=key), head, cfg.pooling)
    encoder = DnaEncoder(dna_backbone(cfg), head, cfg.pooling)
    if pretrained and cfg.weights is not None:
        assign_weights(nn.ModuleDict({"dna": encoder}), barcodebert_source_weights(cfg.weights, key=key), {"dna"})
    return encoder


def build_model(model_cfg: ModelConfig, *, pretrained: bool = True) -> BioClipModel:
    """The CLIP model of `model_cfg`.

    pretrained=True loads each encoder's `weights` (hub id or local folder; BarcodeBERT `model_41.pth` for
    DNA); `weights: null` or pretrained=False gives random weights and needs no network. Heads are seeded
    by `head_seed`. LoRA / full / frozen is applied per encoder. Then `model_cfg.checkpoint`, when set,
    is loaded over everything (ours or a published layout); encoders it covers skip their pretrained
    download, so a published whole-model checkpoint works offline.
    """
    weights = read_weights(model_cfg.checkpoint) if model_cfg.checkpoint else None
    covered = weights.modalities if weights is not None else set()
    encoders = {}
    for modality in model_cfg.modalities:
        cfg = getattr(model_cfg, modality)
        encoder = build_encoder(model_cfg, modality, pretrained=pretrained and modality not in covered)
        apply_finetune(encoder, cfg.finetune, cfg.lora, aliases=encoder.lora_aliases, key=f"model.{modality}")
        encoders[modality] = encoder
    model = BioClipModel(model_cfg, encoders)
    if weights is not None:
        assign_loaded(model, weights)
    return model
