"""The CLIP wrapper: any subset of {image, dna, text} encoders into one L2-normalised space."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from bioclip_cli.config.schema import MODALITIES, ModelConfig
from bioclip_cli.models.lora import lora_layers, merged_lora


def _unit(x: torch.Tensor) -> torch.Tensor:
    """L2-normalised rows, in float32 whatever the autocast dtype (embeddings feed search and the loss)."""
    return F.normalize(x.float(), dim=-1)


class BioClipModel(nn.Module):
    """Encoders `image` / `dna` / `text` (None when absent) and the contrastive logit scale.

    `forward(batch)` reads "image" [B,3,H,W]; "dna" [B,T] + "dna_mask"; "text" [B,L] + "text_mask" +
    "text_type"; other keys are ignored. It returns {modality: L2-normalised [B, output_dim]} for every
    modality that is both in the model and in the batch (float32, also under bf16 autocast).
    """

    def __init__(self, config: ModelConfig, encoders: dict[str, nn.Module]):
        super().__init__()
        self.config = config
        self.modalities: tuple[str, ...] = tuple(m for m in config.modalities if m in encoders)
        self.image = encoders.get("image")
        self.dna = encoders.get("dna")
        self.text = encoders.get("text")
        if config.learn_logit_scale:
            self.log_logit_scale = nn.Parameter(torch.tensor(math.log(config.logit_scale)))
        else:
            self.register_buffer("fixed_logit_scale", torch.tensor(float(config.logit_scale)), persistent=False)

    @property
    def logit_scale(self) -> torch.Tensor:
        """The scalar s in s * A.B^T: fixed (v1) or exp of the learned `log_logit_scale` (v2)."""
        if self.config.learn_logit_scale:
            return self.log_logit_scale.exp()
        return self.fixed_logit_scale

    def encoders(self) -> dict[str, nn.Module]:
        return {m: getattr(self, m) for m in MODALITIES if getattr(self, m) is not None}

    def _encoder(self, name: str) -> nn.Module:
        encoder = getattr(self, name)
        if encoder is None:
            raise ValueError(f"this model has no {name} encoder (modalities: {', '.join(self.modalities)})")
        return encoder

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return _unit(self._encoder("image")(pixels))

    def encode_dna(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return _unit(self._encoder("dna")(ids, mask))

    def encode_text(
        self, ids: torch.Tensor, mask: torch.Tensor | None = None, type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        return _unit(self._encoder("text")(ids, mask, type_ids))

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.image is not None and "image" in batch:
            out["image"] = self.encode_image(batch["image"])
        if self.dna is not None and "dna" in batch:
            out["dna"] = self.encode_dna(batch["dna"], batch.get("dna_mask"))
        if self.text is not None and "text" in batch:
            out["text"] = self.encode_text(batch["text"], batch.get("text_mask"), batch.get("text_type"))
        return out

    @contextmanager
    def lora_merged(self) -> Iterator[BioClipModel]:
        """Context manager: LoRA updates folded into the base weights for faster inference (outputs equal to the
        unmerged model's within float rounding); a no-op for a model without LoRA.

        On exit the base weights are restored bit for bit from copies kept meanwhile (one per adapted layer:
        unmerging by subtraction alone leaves rounding in them), so training goes on from exactly the weights
        it had.
        """
        saved = [
            (param, param.detach().clone())
            for _, layer in lora_layers(self)
            if not layer.merged
            for param in layer.get_base_layer().parameters(recurse=False)
        ]
        try:
            with merged_lora(self):
                yield self
        finally:
            with torch.no_grad():
                for param, copy in saved:
                    param.copy_(copy)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each backbone layer's activations in backward (less memory, more compute)."""
        for encoder in self.encoders().values():
            backbone = encoder.backbone
            kwargs = {"use_reentrant": False}
            if hasattr(backbone, "activation_checkpointing_enable"):  # transformers >= 5.x
                backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
