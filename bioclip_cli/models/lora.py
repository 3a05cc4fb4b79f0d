"""Fine-tuning modes of an encoder: peft LoRA on its backbone, full fine-tuning, or frozen.

LoRA goes through peft (`inject_adapter_in_model`), so an adapted linear `q` becomes `q.base_layer`
plus `q.lora_A.default` / `q.lora_B.default` (A Kaiming-uniform, B zeros: the adapted model starts
equal to the base model). The new heads stay trainable unless the encoder is frozen.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from bioclip_cli.config.schema import LoraConfig
from bioclip_cli.errors import ConfigError

ADAPTER = "default"
LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.default\.weight$")


def lora_targets(names: list[str], aliases: dict[str, str] | None = None) -> list[str]:
    """Module names peft should adapt, after translating the schema's names for this backbone."""
    aliases = aliases or {}
    return [aliases.get(name, name) for name in names]


def inject_lora(backbone: nn.Module, lora: LoraConfig, *, aliases: dict[str, str] | None, key: str) -> None:
    """Add peft LoRA adapters to `backbone` in place (no wrapper module, so parameter names stay readable)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    targets = lora_targets(lora.target_modules, aliases)
    peft_cfg = PeftLoraConfig(
        r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.dropout, target_modules=targets, bias="none"
    )
    try:
        inject_adapter_in_model(peft_cfg, backbone, adapter_name=ADAPTER)
    except ValueError as exc:
        linear_names = sorted(
            {name.rsplit(".", 1)[-1] for name, m in backbone.named_modules() if isinstance(m, nn.Linear)}
        )
        raise ConfigError(
            f"{key}.lora.target_modules",
            f"{key}.lora.target_modules: {lora.target_modules} match no linear layer of the encoder "
            f"({str(exc).splitlines()[0]}); its linear layers are named: {', '.join(linear_names)}",
        ) from None


def apply_finetune(encoder: nn.Module, mode: str, lora: LoraConfig, *, aliases=None, key: str = "") -> None:
    """Set up an encoder (`.backbone` + new `.head`) for `mode`: lora | full | frozen.

    lora: only the adapters and the head train (the DNA encoder's MLM transform counts as backbone);
    full: everything trains; frozen: nothing does.
    """
    if mode == "lora":
        inject_lora(encoder.backbone, lora, aliases=aliases, key=key)
        for name, param in encoder.named_parameters():
            param.requires_grad_(".lora_" in name or name.startswith("head."))
    elif mode in ("full", "frozen"):
        for param in encoder.parameters():
            param.requires_grad_(mode == "full")
    else:  # pragma: no cover - the schema's Literal rules this out
        raise ConfigError(f"{key}.finetune", f"{key}.finetune: unknown mode {mode!r}; choose lora, full or frozen")


def lora_layers(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, peft LoRA layer) for every adapted linear in `module`."""
    from peft.tuners.lora import LoraLayer

    for name, sub in module.named_modules():
        if isinstance(sub, LoraLayer):
            yield name, sub


def lora_scale(layer) -> float:
    return float(layer.scaling[ADAPTER])


@contextmanager
def merged_lora(module: nn.Module):
    """Fold every LoRA update into its base weight for the duration (faster inference); restored on exit."""
    layers = [layer for _, layer in lora_layers(module) if not layer.merged]
    for layer in layers:
        layer.merge()
    try:
        yield module
    finally:
        for layer in layers:
            layer.unmerge()


def any_merged(module: nn.Module) -> bool:
    return any(layer.merged for _, layer in lora_layers(module))
