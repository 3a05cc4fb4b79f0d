"""What the DNA and the text encoder share: a BERT of the preset's shape, its token states pooled into one
vector per sequence, and a new Linear head into the joint space.

Poolings (the encoder config's `pooling`):

- `mean`: the masked mean of the last hidden state (padding left out) -> head;
- `mean-all` (text, compat): the mean over all positions, padding included -> head;
- `softmax-mean` (DNA, compat): per token the MLM `transform` -> head -> softmax over the channels, then the
  mean over all positions.

The attribute names `bert`, `transform` and `head` (in that order) are the state-dict key layout of our
checkpoints and of the published-checkpoint converters: keep them.
"""

from __future__ import annotations

import torch
from torch import nn

from bioclip_cli.models.pooling import masked_mean


def bert_config(cfg, base=None):
    """A transformers BertConfig with the preset's architecture (`cfg`: a DNA or text encoder config).

    Without `base`: transformers' defaults otherwise (2 token types, GELU), as upstream. With `base` (a hub
    config): the architecture is written over it.
    """
    from transformers import BertConfig

    arch = dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        layer_norm_eps=cfg.layer_norm_eps,
    )
    if base is None:
        return BertConfig(type_vocab_size=2, hidden_act="gelu", **arch)
    for name, value in arch.items():
        setattr(base, name, value)
    return base


class PooledBertEncoder(nn.Module):
    """A BERT backbone, a pooling and a new Linear head; subclasses run the BERT in `forward` and hand its
    last hidden state to :meth:`project`."""

    lora_aliases: dict[str, str] = {}

    def __init__(self, bert: nn.Module, head: nn.Linear, pooling: str, transform: nn.Module | None = None):
        super().__init__()
        self.bert = bert
        self.pooling = pooling
        self.transform = transform  # softmax-mean only
        self.head = head

    @property
    def backbone(self) -> nn.Module:
        return self.bert

    def project(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Last hidden state [B, T, H] (+ mask [B, T]) -> un-normalised embedding [B, output_dim]."""
        if self.pooling == "softmax-mean":
            return torch.softmax(self.head(self.transform(hidden)).float(), dim=-1).mean(dim=1)
        return self.head(masked_mean(hidden, None if self.pooling == "mean-all" else mask))
