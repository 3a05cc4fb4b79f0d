"""The image encoder: a transformers ViT; embedding = CLS token after the final LayerNorm -> new Linear head."""

from __future__ import annotations

import torch
from torch import nn

from bioclip_cli.config.schema import ImageEncoderConfig
from bioclip_cli.models.pretrained import check_architecture, load_hub_config, load_pretrained

# The schema speaks of BERT's projection names (query, key, value); transformers 5 calls the ViT ones q/k/v_proj.
LORA_ALIASES = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "output": "o_proj"}


def vit_config(cfg: ImageEncoderConfig, base=None):
    """A transformers ViTConfig with the preset's architecture (over `base`, a hub config, when given)."""
    from transformers import ViTConfig

    arch = dict(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        layer_norm_eps=cfg.layer_norm_eps,  # timm's 1e-6 (the v1 weights need it), whatever the hub config says
        num_channels=3,
        qkv_bias=True,
        hidden_act="gelu",
    )
    if base is None:
        return ViTConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **arch)
    for name, value in arch.items():
        setattr(base, name, value)
    return base


def _expected(cfg: ImageEncoderConfig) -> dict[str, tuple[str, object]]:
    return {
        "hidden_size": ("hidden_size", cfg.hidden_size),
        "num_layers": ("num_hidden_layers", cfg.num_layers),
        "num_heads": ("num_attention_heads", cfg.num_heads),
        "intermediate_size": ("intermediate_size", cfg.intermediate_size),
        "image_size": ("image_size", cfg.image_size),
        "patch_size": ("patch_size", cfg.patch_size),
    }


def vit_backbone(cfg: ImageEncoderConfig, *, pretrained: bool, key: str = "model.image"):
    """A ViTModel without pooler: pretrained from `cfg.weights`, or randomly initialised."""
    from transformers import ViTConfig, ViTModel

    if not pretrained or cfg.weights is None:
        return ViTModel(vit_config(cfg), add_pooling_layer=False)
    hub = load_hub_config(ViTConfig, cfg.weights, key=key, what="image encoder")
    check_architecture(hub, _expected(cfg), source=cfg.weights, key=key)
    config = vit_config(cfg, base=hub)
    return load_pretrained(ViTModel, cfg.weights, config, key=key, what="image encoder", add_pooling_layer=False)


class ImageEncoder(nn.Module):
    """pixels [B, 3, H, W] -> un-normalised embedding [B, output_dim]."""

    lora_aliases = LORA_ALIASES

    def __init__(self, vit: nn.Module, head: nn.Linear):
        super().__init__()
        self.vit = vit
        self.head = head

    @property
    def backbone(self) -> nn.Module:
        return self.vit

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        hidden = self.vit(pixel_values=pixels).last_hidden_state  # after the final LayerNorm
        return self.head(hidden[:, 0])
