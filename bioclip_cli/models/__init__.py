"""The model layer: three encoders (transformers + peft LoRA), the CLIP wrapper, the loss, checkpoints.

Names are imported on first use, so `bioclip_cli.models.loss` does not pull in transformers.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BioClipModel": "bioclip_cli.models.clip",
    "ClipLoss": "bioclip_cli.models.loss",
    "build_model": "bioclip_cli.models.build",
    "load_weights": "bioclip_cli.models.checkpoint",
    "read_checkpoint_config": "bioclip_cli.models.checkpoint",
    "save_checkpoint": "bioclip_cli.models.checkpoint",
    "parameter_rows": "bioclip_cli.models.summary",
    "parameter_table": "bioclip_cli.models.summary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
