"""Parameter counts per encoder: total, trainable, LoRA, head (for `presets --params` and training start)."""

from __future__ import annotations

import dataclasses

from torch import nn

from bioclip_cli.config.schema import RunConfig


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


def parameter_rows(cfg: RunConfig) -> list[dict]:
    """The parameter table of `cfg`'s model, built with random weights on the meta device: no download,
    no memory, no checkpoint."""
    import torch

    from bioclip_cli.models.build import build_model

    model_cfg = dataclasses.replace(cfg.model, checkpoint=None)
    with torch.device("meta"):
        model = build_model(model_cfg, pretrained=False)
    return parameter_table(model)
