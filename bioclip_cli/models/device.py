"""The torch device a command runs its model on: the one asked for, or the best available."""

from __future__ import annotations

from bioclip_cli.errors import BioclipError


def resolve_device(device: str | None):
    """A torch device: the one asked for, or the best available (cuda, mps, cpu)."""
    import torch

    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise BioclipError(f"unknown device {device!r}", "use cpu, cuda, cuda:N or mps") from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count(),
        "mps": torch.backends.mps.is_available(),
    }.get(dev.type, False)
    if not available:
        raise BioclipError(f"device {device!r} is not available on this machine", "use --device cpu")
    return dev
