"""The DNA encoder: BarcodeBERT (a BERT masked-LM over 5-mers) with a new head (SPEC §1).

Pooling `softmax-mean` (compat, what the released weights need): the BERT sees all tokens with no
attention mask; per token: MLM transform (dense, GELU, LayerNorm) -> new Linear -> softmax over the
channels; then the mean over all positions, padding included. Pooling `mean` (the upstream bug fixed):
the mask goes into attention, the masked mean of the last hidden state -> new Linear.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bioclip_cli.config.schema import DnaEncoderConfig
from bioclip_cli.models.pooling import masked_mean
from bioclip_cli.models.pretrained import ENCODERS_HINT, load_hub_config, load_pretrained
from bioclip_cli.models.state_file import read_state_dict
from bioclip_cli.models.weight_set import WeightSet

STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def dna_bert_config(cfg: DnaEncoderConfig):
    """BERT-base-shaped config of BarcodeBERT (transformers defaults otherwise, as upstream)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        layer_norm_eps=cfg.layer_norm_eps,
        type_vocab_size=2,
        hidden_act="gelu",
    )


class DnaEncoder(nn.Module):
    """token ids [B, T] (+ mask) -> un-normalised embedding [B, output_dim]."""

    lora_aliases: dict[str, str] = {}

    def __init__(self, bert: nn.Module, head: nn.Linear, pooling: str):
        super().__init__()
        from transformers.models.bert.modeling_bert import BertPredictionHeadTransform

        self.bert = bert
        self.pooling = pooling
        self.transform = None
        if pooling == "softmax-mean":
            self.transform = BertPredictionHeadTransform(bert.config)
            std = bert.config.initializer_range
            with torch.no_grad():
                if self.transform.dense.weight.device.type != "meta":
                    self.transform.dense.weight.normal_(0.0, std)
                    self.transform.dense.bias.zero_()
        self.head = head

    @property
    def backbone(self) -> nn.Module:
        return self.bert

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.pooling == "softmax-mean":
            hidden = self.bert(input_ids=ids).last_hidden_state  # compat: no attention mask
            return torch.softmax(self.head(self.transform(hidden)).float(), dim=-1).mean(dim=1)
        hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        return self.head(masked_mean(hidden, mask))


def barcodebert_source_weights(source: str, *, key: str = "model.dna") -> WeightSet:
    """The pretrained DNA weights: a `model_41.pth`-style state dict file, or a transformers BertForMaskedLM
    folder / hub id."""
    from bioclip_cli.models.published import barcodebert_weights

    path = Path(source)
    if path.suffix in STATE_DICT_SUFFIXES or path.is_file():
        state, _ = read_state_dict(path, what="BarcodeBERT weights", hint=ENCODERS_HINT.format(key=key))
        return barcodebert_weights(state, str(path))
    from transformers import BertConfig, BertForMaskedLM

    config = load_hub_config(BertConfig, source, key=key, what="DNA encoder")
    model = load_pretrained(BertForMaskedLM, source, config, key=key, what="DNA encoder")
    return barcodebert_weights(model.state_dict(), source)


def dna_backbone(cfg: DnaEncoderConfig) -> nn.Module:
    """A randomly initialised BertModel (no pooler) of the preset's shape; pretrained weights are assigned later."""
    from transformers import BertModel

    return BertModel(dna_bert_config(cfg), add_pooling_layer=False)
