"""The parameter table: counts per encoder (total, trainable, LoRA, head), for `presets --params` and the
start of training.

It sits above :mod:`.build` (it builds a model to count a configuration's parameters); the model classes
do not import it, so the models layer has no import circle.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from bioclip_cli.config.schema import ModelConfig
from bioclip_cli.models.build import build_model


def _count(params) -> int:
    return sum(p.numel() for p in params)


def parameter_table(model: nn.Module) -> list[dict]:
    """Rows {encoder, finetune, total, trainable, lora, head} per encoder, then the logit scale if learned,
    then `all`."""
    rows = []
    for name, encoder in model.encoders().items():
        named = list(encoder.named_parameters())
        rows.append(
            {
                "encoder": name,
                "finetune": getattr(model.config, name).finetune,
                "total": _count(p for _, p in named),
                "trainable": _count(p for _, p in named if p.requires_grad),
                "lora": _count(p for n, p in named if ".lora_" in n),
                "head": _count(encoder.head.parameters()),
            }
        )
    if model.config.learn_logit_scale:
        param = model.log_logit_scale
        rows.append(
            {
                "encoder": "logit scale",
                "finetune": "learned",
                "total": param.numel(),
                "trainable": param.numel() if param.requires_grad else 0,
                "lora": 0,
                "head": 0,
            }
        )
    total = {key: sum(r[key] for r in rows) for key in ("total", "trainable", "lora", "head")}
    rows.append({"encoder": "all", "finetune": None, **total})
    return rows


def parameter_rows(model_cfg: ModelConfig) -> list[dict]:
    """The parameter table of the model of `model_cfg`, built with random weights on the meta device: no
    download, no memory, no checkpoint."""
    import torch

    model_cfg = dataclasses.replace(model_cfg, checkpoint=None)
    with torch.device("meta"):
        model = build_model(model_cfg, pretrained=False)
    return parameter_table(model)
