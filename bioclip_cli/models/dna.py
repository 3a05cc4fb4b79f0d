"""The DNA encoder: BarcodeBERT (a BERT masked-LM over 5-mers) with a new head (docs/method.md, Model).

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
from bioclip_cli.models.bert_encoder import PooledBertEncoder, bert_config
from bioclip_cli.models.pretrained import ENCODERS_HINT, load_hub_config, load_pretrained
from bioclip_cli.models.state_file import read_state_dict
from bioclip_cli.models.weight_set import WeightSet

STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def dna_bert_config(cfg: DnaEncoderConfig):
    """BERT-base-shaped config of BarcodeBERT (transformers defaults otherwise, as upstream)."""
    return bert_config(cfg)


class DnaEncoder(PooledBertEncoder):
    """token ids [B, T] (+ mask) -> un-normalised embedding [B, output_dim]."""

    def __init__(self, bert: nn.Module, head: nn.Linear, pooling: str):
        super().__init__(bert, head, pooling, mlm_transform(bert.config) if pooling == "softmax-mean" else None)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.pooling == "softmax-mean":  # compat: no attention mask
            return self.project(self.bert(input_ids=ids).last_hidden_state, None)
        return self.project(self.bert(input_ids=ids, attention_mask=mask).last_hidden_state, mask)


def mlm_transform(config) -> nn.Module:
    """BarcodeBERT's MLM transform (dense, GELU, LayerNorm), dense initialised as BERT does; the pretrained
    weights are assigned later."""
    from transformers.models.bert.modeling_bert import BertPredictionHeadTransform

    transform = BertPredictionHeadTransform(config)
    with torch.no_grad():
        if transform.dense.weight.device.type != "meta":
            transform.dense.weight.normal_(0.0, config.initializer_range)
            transform.dense.bias.zero_()
    return transform


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
