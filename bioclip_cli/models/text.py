"""The text encoder: a transformers BertModel (BERT-small by default) -> mean pooling -> new Linear head.

Pooling `mean-all` (compat): the attention mask goes into BERT, then the mean over all L positions,
padding included. Pooling `mean`: the masked mean.
"""

from __future__ import annotations

import torch

from bioclip_cli.config.schema import TextEncoderConfig
from bioclip_cli.models.bert_encoder import PooledBertEncoder, bert_config
from bioclip_cli.models.pretrained import check_architecture, load_hub_config, load_pretrained


def text_bert_config(cfg: TextEncoderConfig, base=None):
    """The text BERT's config: the preset's architecture (over `base`, a hub config, when given)."""
    return bert_config(cfg, base)


def _expected(cfg: TextEncoderConfig) -> dict[str, tuple[str, object]]:
    return {
        "hidden_size": ("hidden_size", cfg.hidden_size),
        "num_layers": ("num_hidden_layers", cfg.num_layers),
        "num_heads": ("num_attention_heads", cfg.num_heads),
        "intermediate_size": ("intermediate_size", cfg.intermediate_size),
        "vocab_size": ("vocab_size", cfg.vocab_size),
        "max_position_embeddings": ("max_position_embeddings", cfg.max_position_embeddings),
    }


def text_backbone(cfg: TextEncoderConfig, *, pretrained: bool, key: str = "model.text"):
    """A BertModel without pooler: pretrained from `cfg.weights`, or randomly initialised."""
    from transformers import BertConfig, BertModel

    if not pretrained or cfg.weights is None:
        return BertModel(text_bert_config(cfg), add_pooling_layer=False)
    hub = load_hub_config(BertConfig, cfg.weights, key=key, what="text encoder")
    check_architecture(hub, _expected(cfg), source=cfg.weights, key=key)
    config = text_bert_config(cfg, base=hub)
    return load_pretrained(BertModel, cfg.weights, config, key=key, what="text encoder", add_pooling_layer=False)


class TextEncoder(PooledBertEncoder):
    """token ids, mask, token types [B, L] -> un-normalised embedding [B, output_dim]."""

    def forward(
        self, ids: torch.Tensor, mask: torch.Tensor | None = None, type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        hidden = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=type_ids).last_hidden_state
        return self.project(hidden, mask)
