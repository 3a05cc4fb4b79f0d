"""Converters from the published layouts to a :class:`WeightSet` under our names (docs/method.md, Model).

- BarcodeBERT `model_41.pth`: a BERT masked-LM state dict (`bert.*`, `cls.predictions.*`), usually
  `module.`-prefixed; gives the DNA backbone and its MLM transform. Strict: anything else is an error.
- BIOSCAN-CLIP v1 whole-model files: `image_encoder.lora_vit.` + timm ViT names (fused `qkv`, LoRA
  `linear_a_q/linear_b_q/linear_a_v/linear_b_v`), `dna_encoder.lora_barcode_bert.` and
  `language_encoder.lora_bert.` + BERT names with each adapted linear split into `.w` (base), `.w_a` (A)
  and `.w_b` (B), `language_encoder.proj`; the DNA head is the replaced MLM decoder.
- CLIBD (v2): the inner names become `base_image_encoder` / `base_dna_encoder` / `base_language_encoder`,
  a scalar `logit_scale` (a log) is added, and full fine-tuning BERTs carry plain names (no split).
The upstream LoRA adds B(A(x)) unscaled, so published pairs have scale 1.
"""

from __future__ import annotations

import re

import torch

from bioclip_cli.errors import DataError
from bioclip_cli.models.weight_set import LoraPair, WeightSet

_IMAGE = re.compile(r"^(?:image_encoder\.)?(?P<inner>lora_vit|base_image_encoder)\.(?P<rest>.+)$")
_DNA = re.compile(r"^(?:dna_encoder\.)?(?P<inner>lora_barcode_bert|base_dna_encoder)\.(?P<rest>.+)$")
_TEXT = re.compile(r"^(?:language_encoder\.)?(?P<inner>lora_bert|base_language_encoder)\.(?P<rest>.+)$")
_TEXT_PROJ = re.compile(r"^language_encoder\.proj\.(?P<param>weight|bias)$")

_VIT_TOP = {
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
_VIT_LAYER = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.o_proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_VIT_BLOCK = re.compile(
    r"^blocks\.(?P<i>\d+)\.(?P<part>norm1|norm2|attn\.proj|mlp\.fc1|mlp\.fc2)\.(?P<param>weight|bias)$"
)
_VIT_QKV = re.compile(r"^blocks\.(?P<i>\d+)\.attn\.qkv(?:\.qkv)?\.(?P<param>weight|bias)$")
_VIT_LORA = re.compile(r"^blocks\.(?P<i>\d+)\.attn\.qkv\.linear_(?P<ab>[ab])_(?P<proj>[qkv])\.weight$")
_VIT_HEAD = re.compile(r"^head\.(?P<param>weight|bias)$")
_SPLIT = re.compile(r"^(?P<module>.+)\.(?P<part>w|w_a|w_b)\.(?P<param>weight|bias)$")

_DNA_DROP = {"bert.embeddings.position_ids", "bert.embeddings.token_type_ids", "cls.predictions.bias"}
_TEXT_DROP = {"embeddings.position_ids", "embeddings.token_type_ids"}

OPTIONAL = ("dna.transform.",)  # the MLM transform feeds only the softmax-mean pooling


def strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the `module.` prefix that DataParallel/DDP put on every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def is_bioscan_clip(keys) -> bool:
    return any(p.match(k) for k in keys for p in (_IMAGE, _DNA, _TEXT, _TEXT_PROJ))


def is_barcodebert(keys) -> bool:
    keys = list(keys)
    return (
        bool(keys) and all(k.startswith(("bert.", "cls.")) for k in keys) and any(k.startswith("bert.") for k in keys)
    )


class _Collector:
    """Accumulates converted tensors, LoRA halves and the original key of each."""

    def __init__(self, fmt: str, source: str):
        self.ws = WeightSet(format=fmt, source=source, optional=OPTIONAL)
        self.halves: dict[str, dict[str, tuple[torch.Tensor, str]]] = {}

    def put(self, name: str, tensor: torch.Tensor, origin: str) -> None:
        self.ws.tensors[name] = tensor
        self.ws.origin[name] = origin

    def half(self, module: str, ab: str, tensor: torch.Tensor, origin: str) -> None:
        self.halves.setdefault(module, {})[ab] = (tensor, origin)

    def bert(self, prefix: str, rest: str, tensor: torch.Tensor, origin: str) -> None:
        """A BERT key, possibly split into `.w` / `.w_a` / `.w_b` by the upstream LoRA."""
        match = _SPLIT.match(rest)
        if match is None:
            self.put(prefix + rest, tensor, origin)
        elif match["part"] == "w":
            self.put(f"{prefix}{match['module']}.{match['param']}", tensor, origin)
        elif match["param"] == "weight":
            self.half(prefix + match["module"], "A" if match["part"] == "w_a" else "B", tensor, origin)
        else:
            self.put(prefix + rest, tensor, origin)  # a LoRA bias: no place for it, reported as unexpected

    def finish(self) -> WeightSet:
        for module, ab in self.halves.items():
            if set(ab) != {"A", "B"}:
                have = next(iter(ab.values()))[1]
                raise DataError(self.ws.source, f"{self.ws.source}: LoRA key {have} has no partner (A needs B)")
            self.ws.lora[module] = LoraPair(ab["A"][0], ab["B"][0], 1.0)
            self.ws.origin[module] = ab["A"][1].rsplit(".", 2)[0]
        return self.ws


def _vit(col: _Collector, rest: str, tensor: torch.Tensor, origin: str) -> None:
    prefix = "image.vit."
    if rest in _VIT_TOP:
        col.put(prefix + _VIT_TOP[rest], tensor, origin)
    elif m := _VIT_BLOCK.match(rest):
        col.put(f"{prefix}layers.{m['i']}.{_VIT_LAYER[m['part']]}.{m['param']}", tensor, origin)
    elif m := _VIT_QKV.match(rest):
        if tensor.shape[0] % 3:
            raise DataError(col.ws.source, f"{col.ws.source}: {origin} has {tensor.shape[0]} rows, not 3 x width")
        for proj, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0), strict=True):
            col.put(f"{prefix}layers.{m['i']}.attention.{proj}.{m['param']}", part.clone(), origin)
    elif m := _VIT_LORA.match(rest):
        col.half(f"{prefix}layers.{m['i']}.attention.{m['proj']}_proj", m["ab"].upper(), tensor, origin)
    elif m := _VIT_HEAD.match(rest):
        col.put(f"image.head.{m['param']}", tensor, origin)
    else:
        col.put(prefix + rest, tensor, origin)  # not a timm ViT name we know: reported as unexpected


def _dna(col: _Collector, rest: str, tensor: torch.Tensor, origin: str) -> None:
    if rest in _DNA_DROP:
        return
    if rest.startswith("bert."):
        col.bert("dna.bert.", rest[len("bert.") :], tensor, origin)
    elif rest.startswith("cls.predictions.transform."):
        col.put("dna.transform." + rest[len("cls.predictions.transform.") :], tensor, origin)
    elif rest in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"):
        col.put("dna.head." + rest.rsplit(".", 1)[1], tensor, origin)
    else:
        col.put("dna." + rest, tensor, origin)


def _text(col: _Collector, rest: str, tensor: torch.Tensor, origin: str) -> None:
    if rest in _TEXT_DROP or rest.startswith("pooler."):
        return
    col.bert("text.bert.", rest, tensor, origin)


def bioscan_clip_weights(state: dict[str, torch.Tensor], source: str) -> WeightSet:
    """A published BIOSCAN-CLIP (v1) or CLIBD (v2) whole-model state dict, converted."""
    state = strip_module_prefix(state)
    v2 = "logit_scale" in state or any(".base_" in f".{k}" for k in state)
    col = _Collector("clibd-v2" if v2 else "bioscan-clip-v1", source)
    unknown = []
    for key, tensor in state.items():
        if m := _IMAGE.match(key):
            _vit(col, m["rest"], tensor, key)
        elif m := _DNA.match(key):
            _dna(col, m["rest"], tensor, key)
        elif m := _TEXT.match(key):
            _text(col, m["rest"], tensor, key)
        elif m := _TEXT_PROJ.match(key):
            col.put(f"text.head.{m['param']}", tensor, key)
        elif key == "logit_scale" and tensor.numel() == 1:
            col.ws.log_logit_scale = tensor.reshape(()).float()
        else:
            unknown.append(key)
    if unknown:
        raise unknown_layout(source, unknown, f"a {col.ws.format} checkpoint")
    return col.finish()


def barcodebert_weights(state: dict[str, torch.Tensor], source: str) -> WeightSet:
    """A BarcodeBERT masked-LM state dict (`model_41.pth`): the DNA backbone and its MLM transform.

    The MLM vocabulary decoder and bias are dropped (the new head replaces them); the head itself is
    not provided (`skip`), so it keeps its (seeded) initialisation.
    """
    state = strip_module_prefix(state)
    col = _Collector("barcodebert", source)
    col.ws.skip = ("dna.head.",)
    for key, tensor in state.items():
        if key in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"):
            continue
        _dna(col, key, tensor, key)
    return col.finish()


def unknown_layout(source: str, keys: list[str], expected: str) -> DataError:
    few = ", ".join(sorted(keys)[:5]) + (f" (and {len(keys) - 5} more)" if len(keys) > 5 else "")
    return DataError(
        source,
        f"{source} is not {expected}: unexpected keys {few}",
        "bioclip reads its own checkpoints (model.safetensors), the published BIOSCAN-CLIP/CLIBD .pth files "
        "and BarcodeBERT's model_41.pth",
    )
