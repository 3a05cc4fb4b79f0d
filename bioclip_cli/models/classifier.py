"""A species classifier over trained encoders: the original's supervised baseline and method two's list A.

:class:`SpeciesClassifier` puts one `Linear(output_dim -> n_classes)` head on each chosen encoder of a
BIOSCAN-CLIP model (the image encoder, optionally the DNA encoder too), over the encoder's output before
L2 normalisation, as the original's `image_encoder + Linear(768 -> species)`. With two heads the training
loss is the sum of the two cross-entropies (the original's image + DNA baseline).

Classes are the sorted distinct species of the training rows (the original's `list(set(...))` order is not
reproducible); `taxonomy` gives each class its order, family and genus so that a predicted class answers
at every level.

A saved classifier is a folder (written atomically: a temporary sibling renamed into place):
`model.safetensors` (the whole module: encoders + heads), `classes.json` (classes, their taxonomy, the
heads' modalities), `config.yaml` (the run configuration that builds the encoders) and `meta.json`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from bioclip_cli.config.schema import LEVELS, RunConfig
from bioclip_cli.errors import DataError
from bioclip_cli.models.clip import BioClipModel

HEAD_MODALITIES = ("image", "dna")
CLASSES_FILE = "classes.json"
WEIGHTS_FILE = "model.safetensors"


class SpeciesClassifier(nn.Module):
    """Linear heads over a :class:`BioClipModel`'s encoders; `forward(batch)` -> {modality: logits [B, C]}."""

    def __init__(
        self,
        clip: BioClipModel,
        classes: Sequence[str],
        taxonomy: Mapping[str, Sequence[str]],
        modalities: Sequence[str] = ("image",),
    ):
        super().__init__()
        bad = [m for m in modalities if m not in HEAD_MODALITIES or m not in clip.modalities]
        if bad or not modalities:
            raise ValueError(f"classifier heads must be on encoders of the model among {HEAD_MODALITIES}, got {bad}")
        self.clip = clip
        self.classes = [str(c) for c in classes]
        self.taxonomy = {lv: [str(v) for v in taxonomy[lv]] for lv in LEVELS}
        self.modalities = tuple(m for m in HEAD_MODALITIES if m in modalities)
        dim = clip.config.output_dim
        self.heads = nn.ModuleDict({m: nn.Linear(dim, len(self.classes)) for m in self.modalities})

    def parameters_to_train(self, freeze_encoders: bool) -> list[nn.Parameter]:
        """The heads, plus every parameter of the encoders they sit on unless `freeze_encoders` (linear probe)."""
        params = list(self.heads.parameters())
        encoders = self.clip.encoders()
        for m in self.modalities:
            for p in encoders[m].parameters():
                p.requires_grad_(not freeze_encoders)
                if not freeze_encoders:
                    params.append(p)
        for m, encoder in encoders.items():
            if m not in self.modalities:
                encoder.requires_grad_(False)
        for p in self.clip.parameters(recurse=False):  # the learned logit scale (v2) is not the classifier's
            p.requires_grad_(False)
        return params

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        encoders = self.clip.encoders()
        out = {}
        if "image" in self.modalities and "image" in batch:
            out["image"] = self.heads["image"](encoders["image"](batch["image"]))
        if "dna" in self.modalities and "dna" in batch:
            out["dna"] = self.heads["dna"](encoders["dna"](batch["dna"], batch.get("dna_mask")))
        return out

    def describe(self) -> dict:
        return {"classes": self.classes, "taxonomy": self.taxonomy, "modalities": list(self.modalities)}


def save_classifier(
    model: SpeciesClassifier, directory: str | Path, *, config: RunConfig, meta: dict | None = None
) -> Path:
    """Write the classifier folder (see the module docstring) atomically."""
    from safetensors.torch import save_file

    from bioclip_cli.config import save_config

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "bioclip-classifier"})
        (tmp / CLASSES_FILE).write_text(json.dumps(model.describe(), indent=1) + "\n")
        save_config(config, tmp / "config.yaml")
        (tmp / "meta.json").write_text(json.dumps(meta or {}, indent=2, default=str) + "\n")
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_classifier(directory: str | Path, clip: BioClipModel) -> SpeciesClassifier:
    """The classifier saved in `directory`, its encoders being `clip` (a model of the saved configuration)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    info_path, weights = directory / CLASSES_FILE, directory / WEIGHTS_FILE
    if not info_path.is_file() or not weights.is_file():
        raise DataError(directory, f"{directory} is not a saved classifier (it needs {CLASSES_FILE} and {WEIGHTS_FILE})",
                        "train one: bioclip finetune-classifier --run RUN")  # fmt: skip
    info = json.loads(info_path.read_text())
    model = SpeciesClassifier(clip, info["classes"], info["taxonomy"], info["modalities"])
    model.load_state_dict(load_file(str(weights)), strict=True)
    return model
