"""Read a state dict from disk safely: safetensors, or a `.pth` through `torch.load(weights_only=True)`.

`.pth` files come from the internet; they are never unpickled beyond tensors and plain containers.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from bioclip_cli.errors import DataError, MissingArtifact

# Keys under which training scripts commonly nest the model's state dict.
_WRAPPERS = ("state_dict", "model_state_dict", "model", "module")


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise DataError(path, f"{path} is not a readable safetensors file ({exc})") from None
    return tensors, metadata


def read_torch_file(path: Path) -> dict[str, torch.Tensor]:
    """A `.pth`/`.pt`/`.bin` state dict, loaded with `weights_only=True` onto the CPU."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        needed = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if needed is None:
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
            reason = (
                detail.group(1).strip()
                if detail
                else text.strip().splitlines()[0]
                if text.strip()
                else "unpickling failed"
            )
            raise DataError(path, f"{path} is not a readable PyTorch state dict ({reason[:160]})") from None
        raise DataError(
            path,
            f"{path} needs the Python class {needed.group(1)} to load, so it is refused: weights files are read "
            "with torch.load(weights_only=True) and never unpickled beyond tensors",
            "if you trust the file, re-save just its state dict of tensors with torch.save and load that",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise DataError(path, f"{path} is not a readable PyTorch file ({str(exc).strip()[:160]})") from None
    return _state_dict_of(obj, path)


def _state_dict_of(obj, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, dict):
        for key in _WRAPPERS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        shown = ", ".join(repr(k) for k in list(obj)[:6])
        raise DataError(path, f"{path} is not a state dict of tensors; its top-level keys are: {shown}")
    raise DataError(path, f"{path} holds a {type(obj).__name__}, not a state dict of tensors")


def read_state_dict(path: str | Path, *, what: str, hint: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, safetensors metadata) of a weights file; a missing file is a MissingArtifact with `hint`."""
    path = Path(path)
    if path.is_dir():
        inner = path / "model.safetensors"
        if not inner.is_file():
            shown = ", ".join(sorted(p.name for p in path.iterdir())[:8]) or "nothing"
            raise DataError(path, f"{path} is a folder without model.safetensors (it holds: {shown})", hint)
        path = inner
    if not path.is_file():
        raise MissingArtifact(str(path), f"{what} {path} does not exist", hint)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    return read_torch_file(path), {}
