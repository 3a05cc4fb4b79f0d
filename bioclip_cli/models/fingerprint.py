"""What identifies a model's embedding space: the sha256 of its weights file and the settings that shape a vector.

Two vectors can only be compared when the same model, fed the same way, made them. :func:`model_fingerprint`
hashes the checkpoint's bytes (or, for an untrained preset, its seeds), the model configuration and the
evaluation-time input preparation (resize, crop, normalisation, the DNA tokenisation). Reference libraries and
specimen embeddings carry it, `predict --keys` compares it, and `--log` records it with the checkpoint's sha256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from bioclip_cli.config import to_dict
from bioclip_cli.config.schema import RunConfig

WEIGHTS_FILE = "model.safetensors"
_EVAL_IMAGE_KEYS = ("resize", "crop", "mean", "std", "draft")  # what the evaluation transform reads


def weights_file(checkpoint: str | Path) -> Path:
    """The file holding a checkpoint's weights (our checkpoint folders keep them in model.safetensors)."""
    checkpoint = Path(checkpoint)
    return checkpoint / WEIGHTS_FILE if checkpoint.is_dir() else checkpoint


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_sha256(checkpoint: str | Path | None) -> str:
    """The sha256 of a checkpoint's weights file ("" without a checkpoint)."""
    return file_sha256(weights_file(checkpoint)) if checkpoint else ""


def model_fingerprint(cfg: RunConfig, checkpoint: str | Path | None, weights_sha256: str | None = None) -> str:
    """A sha256 naming the embedding space of `cfg`'s model with `checkpoint` loaded (see the module docstring)."""
    model = to_dict(dataclasses.replace(cfg.model, checkpoint=None))
    payload = {
        "weights": weights_sha256 if weights_sha256 is not None else checkpoint_sha256(checkpoint),
        "seed": cfg.train.seed if not checkpoint else None,  # untrained: seeded random heads
        "model": model,
        "image": {k: v for k, v in to_dict(cfg.data.image).items() if k in _EVAL_IMAGE_KEYS},
        "dna": to_dict(cfg.data.dna),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
