"""Checkpoints: our format (a folder: model.safetensors + config.yaml + meta.json) and loading any layout.

`load_weights(model, path)` detects the layout: our folder or .safetensors file, a published BIOSCAN-CLIP
v1 or CLIBD v2 `.pth`, or BarcodeBERT's `model_41.pth` (DNA encoder alone). `.pth` files are read with
`torch.load(weights_only=True)` only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from bioclip_cli.atomic_write import atomic_folder
from bioclip_cli.config.schema import RunConfig
from bioclip_cli.errors import DataError
from bioclip_cli.models.clip import BioClipModel
from bioclip_cli.models.lora import any_merged, lora_layers, lora_scale
from bioclip_cli.models.published import (
    barcodebert_weights,
    bioscan_clip_weights,
    is_barcodebert,
    is_bioscan_clip,
    strip_module_prefix,
    unknown_layout,
)
from bioclip_cli.models.state_file import read_state_dict
from bioclip_cli.models.weight_set import WeightSet, assign_weights, split_lora

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
FORMAT = "bioclip"
FORMAT_VERSION = 1
CHECKPOINTS_HINT = "run `bioclip download checkpoints`, or check the path"
_OURS = ("image.", "dna.", "text.")


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The BioClipModel inside a DDP / torch.compile wrapper."""
    while not isinstance(model, BioClipModel) and hasattr(model, "module"):
        model = model.module
    return getattr(model, "_orig_mod", model)


def lora_scales(model: BioClipModel) -> dict[str, float]:
    """{modality: alpha / r} for every encoder that carries LoRA adapters."""
    scales: dict[str, float] = {}
    for name, layer in lora_layers(model):
        scales.setdefault(name.split(".", 1)[0], lora_scale(layer))
    return scales


def save_checkpoint(
    model: torch.nn.Module, directory: str | Path, *, config: RunConfig | None = None, meta: dict | None = None
) -> Path:
    """Write `directory/` = model.safetensors + config.yaml (when given) + meta.json, atomically.

    Everything is written into a temporary sibling folder (a name unique to this process and call) that then
    replaces `directory` by rename, so a crash never leaves a half-written checkpoint under the final name;
    on failure the temporary folder is removed (:func:`bioclip_cli.atomic_write.atomic_folder`).
    """
    from safetensors.torch import save_file

    from bioclip_cli import __version__
    from bioclip_cli.config import save_config

    model = _unwrap(model)
    if any_merged(model):
        raise RuntimeError("save_checkpoint inside lora_merged(): the base weights hold the LoRA updates")
    directory = Path(directory)
    with atomic_folder(directory) as tmp:  # unique temporary folder, removed on failure, renamed in on success
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        scales = lora_scales(model)
        metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
        metadata.update({f"lora_scale.{m}": repr(s) for m, s in scales.items()})
        save_file(state, str(tmp / WEIGHTS_FILE), metadata=metadata)
        if config is not None:
            save_config(config, tmp / CONFIG_FILE)
        info = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "name": config.name if config is not None else None,
            "modalities": list(model.modalities),
            "finetune": {m: getattr(model.config, m).finetune for m in model.modalities},
            "lora_scale": scales,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **(meta or {}),
        }
        (tmp / META_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")
    return directory


def read_weights(path: str | Path) -> WeightSet:
    """Read any supported checkpoint file or folder into a WeightSet (no model needed)."""
    path = Path(path)
    state, metadata = read_state_dict(path, what="checkpoint", hint=CHECKPOINTS_HINT)
    source = str(path)
    state = strip_module_prefix(state)
    keys = list(state)
    if metadata.get("format") == FORMAT or (keys and all(k.startswith(_OURS) or k == "log_logit_scale" for k in keys)):
        scales = {k.split(".", 1)[1]: float(v) for k, v in metadata.items() if k.startswith("lora_scale.")}
        log_scale = state.pop("log_logit_scale", None)
        stray = [k for k in state if not k.startswith(_OURS)]
        if stray:
            raise unknown_layout(source, stray, "a bioclip checkpoint")
        # saved without metadata (e.g. torch.save of a state dict): LoRA scales unknown, assume the model's own
        tensors, pairs = split_lora(state, {m: scales.get(m) for m in ("image", "dna", "text")})
        return WeightSet(format=FORMAT, source=source, tensors=tensors, lora=pairs, log_logit_scale=log_scale)
    if is_bioscan_clip(keys):
        return bioscan_clip_weights(state, source)
    if is_barcodebert(keys):
        return barcodebert_weights(state, source)
    raise unknown_layout(source, keys, "a bioclip, BIOSCAN-CLIP, CLIBD or BarcodeBERT checkpoint")


def assign_loaded(model: BioClipModel, weights: WeightSet) -> None:
    """Put a WeightSet into the model: every model encoder the set covers (all of them for whole-model sets)."""
    model = _unwrap(model)
    have = weights.modalities
    if weights.format == "barcodebert":
        if "dna" not in model.modalities:
            raise DataError(
                weights.source, f"{weights.source} is a BarcodeBERT (DNA) checkpoint; this model has no DNA encoder"
            )
        scope = {"dna"}
    else:
        lacking = [m for m in model.modalities if m not in have]
        if lacking:
            raise DataError(
                weights.source,
                f"{weights.source} has no {' / '.join(lacking)} encoder (it holds {', '.join(sorted(have)) or 'none'}); "
                f"this model needs {', '.join(model.modalities)}",
                "use a preset whose model.modalities match the checkpoint",
            )
        scope = set(model.modalities)
    assign_weights(model, weights, scope)


def load_weights(model: torch.nn.Module, path: str | Path) -> str:
    """Load a checkpoint of any supported layout into `model`; returns the layout's name.

    Layouts: "bioclip" (ours), "bioscan-clip-v1", "clibd-v2", "barcodebert" (DNA encoder only).
    """
    weights = read_weights(path)
    assign_loaded(model, weights)
    return weights.format


def read_checkpoint_config(path: str | Path) -> RunConfig | None:
    """The resolved RunConfig saved beside our checkpoint (folder or its model.safetensors), else None."""
    from bioclip_cli.config import load_run_config

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    config = folder / CONFIG_FILE
    if path.is_file() and path.suffix != ".safetensors":
        return None
    return load_run_config(config) if config.is_file() else None
