"""Weights in one neutral form, and the one function that puts them into a model.

Every checkpoint layout (ours, the published BIOSCAN-CLIP v1 and CLIBD v2 files, BarcodeBERT's
`model_41.pth`) is converted into a :class:`WeightSet`: tensors under our model's *plain* parameter
names (as if no LoRA were injected: `dna.bert.encoder.layer.0.attention.self.query.weight`) plus the LoRA
pairs (A, B, scale) per adapted linear. :func:`assign_weights` then fits that to whatever the model is:
LoRA pairs are copied into matching peft adapters, or folded into the base weight (W + scale·B·A) where
the model has no adapter of that shape and scale; adapters the source lacks are reset to B = 0. The
model's function therefore always equals the source's, whatever the fine-tuning modes.
Nothing is copied unless every check passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from bioclip_cli.errors import DataError
from bioclip_cli.models.lora import ADAPTER, LORA_KEY, lora_layers, lora_scale


@dataclass(frozen=True)
class LoraPair:
    """One LoRA update: delta W = scale * B @ A (A: [r, in], B: [out, r]); scale None = the model's own."""

    a: torch.Tensor
    b: torch.Tensor
    scale: float | None


@dataclass
class WeightSet:
    """Weights under our plain names. `skip` lists model prefixes this source does not provide (left as is);
    `optional` lists prefixes used when the model has them and dropped otherwise."""

    format: str
    source: str
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    lora: dict[str, LoraPair] = field(default_factory=dict)
    log_logit_scale: torch.Tensor | None = None
    skip: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    origin: dict[str, str] = field(default_factory=dict)  # plain name -> key in the file (for messages)

    @property
    def modalities(self) -> set[str]:
        return {key.split(".", 1)[0] for key in (*self.tensors, *self.lora)}


def _few(names, n: int = 5) -> str:
    names = sorted(names)
    shown = ", ".join(names[:n])
    return shown + (f" (and {len(names) - n} more)" if len(names) > n else "")


def plain_name(key: str) -> str:
    """A model state-dict key without peft's `.base_layer` wrapper."""
    return key.replace(".base_layer.", ".")


def assign_weights(root: nn.Module, weights: WeightSet, scope: set[str]) -> None:
    """Copy `weights` into `root` for the top-level submodules named in `scope` (e.g. {"image", "dna"})."""
    if any(layer.merged for _, layer in lora_layers(root)):
        raise RuntimeError("cannot load weights inside lora_merged(): the base weights hold the LoRA updates")
    state = root.state_dict(keep_vars=True)
    targets: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if LORA_KEY.match(key) or key == "log_logit_scale":
            continue
        plain = plain_name(key)
        if plain.split(".", 1)[0] in scope and not plain.startswith(weights.skip):
            targets[plain] = tensor
    adapters = {name: layer for name, layer in lora_layers(root) if name.split(".", 1)[0] in scope}

    tensors = {k: v for k, v in weights.tensors.items() if k.split(".", 1)[0] in scope}
    copy_lora: dict[str, LoraPair] = {}
    for module, pair in weights.lora.items():
        if module.split(".", 1)[0] not in scope:
            continue
        layer = adapters.get(module)
        if layer is not None and _fits(layer, pair):
            copy_lora[module] = pair
            continue
        base = tensors.get(f"{module}.weight")
        if base is None:
            continue  # reported as missing below
        scale = 1.0 if pair.scale is None else pair.scale
        if tuple(pair.b.shape[:1]) + tuple(pair.a.shape[1:]) != tuple(base.shape):
            raise DataError(
                weights.source,
                f"{weights.source}: the LoRA update of {weights.origin.get(module, module)} has shape "
                f"{list(pair.b.shape)} x {list(pair.a.shape)}, which does not fit its weight {list(base.shape)}",
            )
        tensors[f"{module}.weight"] = (base.double() + scale * (pair.b.double() @ pair.a.double())).to(base.dtype)

    missing = [k for k in targets if k not in tensors]
    unexpected = [weights.origin.get(k, k) for k in tensors if k not in targets and not k.startswith(weights.optional)]
    mismatched = [
        f"{weights.origin.get(k, k)} {list(tensors[k].shape)} vs model {list(t.shape)}"
        for k, t in targets.items()
        if k in tensors and tuple(tensors[k].shape) != tuple(t.shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_few(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): {_few(mismatched, 3)}")
        raise DataError(
            weights.source,
            f"{weights.source} ({weights.format} layout) does not fit this model: {'; '.join(parts)}",
            "check that the preset's encoder shapes, modalities and pooling match the checkpoint "
            "(`bioclip presets NAME` shows them)",
        )

    with torch.no_grad():
        for key, target in targets.items():
            target.copy_(tensors[key])
        for module, layer in adapters.items():
            pair = copy_lora.get(module)
            if pair is None:
                layer.lora_B[ADAPTER].weight.zero_()
            else:
                layer.lora_A[ADAPTER].weight.copy_(pair.a)
                layer.lora_B[ADAPTER].weight.copy_(pair.b)
        log_scale = getattr(root, "log_logit_scale", None)
        if "log_logit_scale" in state and isinstance(log_scale, nn.Parameter) and weights.log_logit_scale is not None:
            log_scale.copy_(weights.log_logit_scale.reshape(log_scale.shape))


def _fits(layer, pair: LoraPair) -> bool:
    a = layer.lora_A[ADAPTER].weight
    b = layer.lora_B[ADAPTER].weight
    same_scale = pair.scale is None or math.isclose(lora_scale(layer), pair.scale, rel_tol=1e-9)
    return tuple(a.shape) == tuple(pair.a.shape) and tuple(b.shape) == tuple(pair.b.shape) and same_scale


def split_lora(tensors: dict[str, torch.Tensor], scales: dict[str, float | None]) -> tuple[dict, dict]:
    """Split one of our state dicts (peft names) into (plain tensors, {module: LoraPair}).

    `scales` gives each modality's LoRA scale (alpha / r) as saved; None means "the model's own".
    """
    plain: dict[str, torch.Tensor] = {}
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = LORA_KEY.match(key)
        if match:
            halves.setdefault(match["module"], {})[match["ab"]] = tensor
        else:
            plain[plain_name(key)] = tensor
    pairs = {}
    for module, ab in halves.items():
        if set(ab) == {"A", "B"}:
            pairs[module] = LoraPair(ab["A"], ab["B"], scales.get(module.split(".", 1)[0]))
        else:  # half an adapter: leave it to assign_weights to report as unexpected
            for half, tensor in ab.items():
                plain[f"{module}.lora_{half}.{ADAPTER}.weight"] = tensor
    return plain, pairs
