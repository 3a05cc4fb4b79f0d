"""`bioclip env`: what a bug report needs to know about this installation, gathered offline.

Versions (this package, Python, torch and its CUDA build, the libraries the method runs on, faiss and
whether it was built with GPU support), the devices torch sees, thread counts, the Hugging Face cache and
offline flags, and the folders the commands read and write by default. Like `hf env` and `accelerate env`,
but for the libraries this toolkit depends on. Nothing here touches the network or a GPU's memory beyond
asking for its properties.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from bioclip_cli.config import presets_dir

# Folders the commands use by default, relative to the working directory: downloads and built HDF5 files
# (`bioclip download --root .` puts data/ and ckpt/ here), and run directories (`runs/NAME`).
DEFAULT_FOLDERS = {"data": Path("data"), "checkpoints": Path("ckpt"), "runs": Path("runs")}
PACKAGES = ("transformers", "peft", "accelerate", "h5py", "numpy", "scipy", "pillow", "safetensors", "typer", "rich")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
HF_VARIABLES = ("HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def _torch() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """torch's build and the devices it sees: ({version, cuda build, ...}, [one dict per device])."""
    import torch

    info: dict[str, Any] = {
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,  # None for a CPU build
        "cuda_available": torch.cuda.is_available(),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
    }
    devices = [{"device": "cpu", "name": platform.processor() or platform.machine(), "memory_gb": None}]
    if info["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append(
                {
                    "device": f"cuda:{i}",
                    "name": props.name,
                    "memory_gb": round(props.total_memory / 1024**3, 1),
                    "capability": f"{props.major}.{props.minor}",
                }
            )
    if info["mps_available"]:
        devices.append({"device": "mps", "name": "Apple Metal", "memory_gb": None})
    return info, devices


def _faiss() -> dict[str, Any]:
    try:
        import faiss
    except ImportError:
        return {"version": None, "gpu_support": False, "gpus": 0}
    gpu_support = hasattr(faiss, "StandardGpuResources")
    options = faiss.get_compile_options() if hasattr(faiss, "get_compile_options") else None
    return {
        "version": getattr(faiss, "__version__", None),
        "gpu_support": bool(gpu_support),
        "gpus": int(faiss.get_num_gpus()) if gpu_support and hasattr(faiss, "get_num_gpus") else 0,
        "compile_options": options.strip() if isinstance(options, str) else None,
    }


def _huggingface() -> dict[str, Any]:
    try:
        from huggingface_hub import constants

        cache, home = constants.HF_HUB_CACHE, constants.HF_HOME
    except ImportError:  # transformers brings huggingface_hub; without it, the documented defaults
        home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
        cache = os.environ.get("HF_HUB_CACHE", os.path.join(home, "hub"))
    return {
        "home": str(home),
        "hub_cache": str(cache),
        "hub_offline": _flag("HF_HUB_OFFLINE"),
        "transformers_offline": _flag("TRANSFORMERS_OFFLINE"),
        "endpoint": os.environ.get("HF_ENDPOINT"),
    }


def _threads() -> dict[str, Any]:
    import torch

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        **{name: os.environ.get(name) for name in THREAD_VARIABLES},
    }


def _folders(cwd: Path) -> dict[str, Any]:
    folders: dict[str, Any] = {"working_directory": str(cwd), "presets": str(presets_dir())}
    for name, rel in DEFAULT_FOLDERS.items():
        path = cwd / rel
        folders[name] = f"{path} ({'exists' if path.is_dir() else 'absent'})"
    return folders


def environment_report(cwd: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The whole report, by section: {"bioscan-clip": {...}, "python": {...}, "torch": {...}, ...}."""
    from bioclip_cli import __version__

    torch_info, devices = _torch()
    settings = {name: value for name, value in sorted(os.environ.items()) if name.startswith("BIOCLIP_")}
    return {
        "bioscan-clip": {"version": __version__, "location": str(Path(__file__).resolve().parents[1])},
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
            "platform": platform.platform(),
        },
        "torch": torch_info,
        "faiss": _faiss(),
        "packages": {name: _version(name) for name in PACKAGES},
        "devices": {d["device"]: {k: v for k, v in d.items() if k != "device"} for d in devices},
        "threads": _threads(),
        "huggingface": _huggingface(),
        "folders": _folders(Path(cwd) if cwd is not None else Path.cwd()),
        "settings": settings,
    }


def environment_rows(report: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The report as rows {section, item, value} for a table or CSV (nested values joined into one cell)."""
    rows = []
    for section, items in report.items():
        if not items:
            rows.append({"section": section, "item": "-", "value": None})
        for item, value in items.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}: {v}" for k, v in value.items() if v is not None)
            rows.append({"section": section, "item": item, "value": value})
    return rows
