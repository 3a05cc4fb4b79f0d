"""The registry of downloadable artifacts: datasets, checkpoints, released embeddings and encoders.

The entries live in `artifacts.yaml` beside this module (package data); this module only reads and
checks them. `bioclip download` and its `--dry-run` read nothing else. Set BIOCLIP_ARTIFACTS to a YAML
file of the same shape to use another registry (tests, private mirrors).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from bioclip_cli.errors import BioclipError, DataError

REGISTRY_FILE = Path(__file__).with_name("artifacts.yaml")
TARGETS = ("5m", "1m", "insect", "checkpoints", "embeddings", "encoders")
DATASET_WHATS = {
    "5m": ("hdf5", "raw", "metadata"),
    "1m": ("hdf5", "raw", "metadata", "partition"),
    "insect": ("hdf5", "raw", "metadata"),  # hdf5: the processed release (INSECT_images.hdf5 + INSECT_metadata.csv)
}
KINDS = ("file", "zip-to-unpack", "hf-file", "hf-model")
LAYOUTS = ("bioscan5m", "bioscan1m")
HUB_ENDPOINT = "https://huggingface.co"

_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_KEYS = {
    "name", "target", "what", "kind", "urls", "size", "approx_size", "checksum", "dest", "unpack",
    "check_files", "presets", "repo_id", "repo_type", "repo_path", "revision", "allow_patterns", "note",
}  # fmt: skip


@dataclass(frozen=True)
class Checksum:
    """A published digest: `kind` is md5 or sha256, `value` lower-case hex."""

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"

    @classmethod
    def parse(cls, text: str, where: str = "checksum") -> Checksum:
        kind, _, value = str(text).partition(":")
        kind, value = kind.strip().lower(), value.strip().lower()
        width = {"md5": 32, "sha256": 64}.get(kind)
        if width is None or not re.fullmatch(f"[0-9a-f]{{{width}}}", value):
            raise BioclipError(f"{where}: {text!r} is not 'md5:<32 hex>' or 'sha256:<64 hex>'")
        return cls(kind, value)


@dataclass(frozen=True)
class Artifact:
    """One downloadable file (or, for `hf-model`, one Hugging Face model snapshot)."""

    name: str
    target: str
    kind: str
    dest: str
    urls: tuple[str, ...] = ()
    what: tuple[str, ...] = ()
    size: int | None = None
    approx_size: int | None = None
    checksum: Checksum | None = None
    hub_checksum: bool = False
    presets: tuple[str, ...] = ()
    unpack_into: str | None = None
    layout: str | None = None
    check_files: dict[str, Checksum] = field(default_factory=dict)
    repo_id: str | None = None
    repo_path: str | None = None
    repo_type: str = "model"  # hub entries: model or dataset repository
    revision: str = "main"
    allow_patterns: tuple[str, ...] = ()
    note: str = ""

    @property
    def expected_size(self) -> int | None:
        """The size used for the disk-space check: exact when published, else the approximate one."""
        return self.size if self.size is not None else self.approx_size

    @property
    def checksum_label(self) -> str:
        if self.checksum is not None:
            return self.checksum.kind
        return "hub sha256" if self.hub_checksum else "none published"


def parse_size(text: str | int | float | None) -> int | None:
    """`"190.4 GB"` -> 190400000000 (decimal units); numbers are bytes; None stays None."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else int(text)
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?B)\s*", str(text).upper())
    if not match:
        raise BioclipError(f"size {text!r} is not like '190.4 GB'")
    return int(round(float(match.group(1)) * _UNITS[match.group(2)]))


def format_size(n: int | None, approx: bool = False) -> str:
    """Bytes as a short human string (decimal units): 190400000000 -> '190.4 GB'."""
    if n is None:
        return "unknown"
    for unit in ("TB", "GB", "MB", "KB"):
        if n >= _UNITS[unit]:
            text = f"{n / _UNITS[unit]:.1f} {unit}"
            break
    else:
        text = f"{n} B"
    return f"~{text}" if approx else text


def _tuple(value) -> tuple[str, ...]:
    if value is None:
        return ()
    return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)


def _artifact(entry: dict, where: str) -> Artifact:
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise BioclipError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(_KEYS))}")
    name = str(entry.get("name") or "")
    if not name:
        raise BioclipError(f"{where}: every artifact needs a `name`")
    where = f"{where} ({name})"
    target, kind = entry.get("target"), entry.get("kind")
    if target not in TARGETS:
        raise BioclipError(f"{where}: target {target!r} is not one of {', '.join(TARGETS)}")
    if kind not in KINDS:
        raise BioclipError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    what = _tuple(entry.get("what"))
    bad_what = [w for w in what if w not in DATASET_WHATS.get(target, ())]
    if bad_what:
        raise BioclipError(f"{where}: what {bad_what} is not valid for target {target}")
    text = str(entry.get("checksum") or "none published").strip()
    checksum = None if text.lower() in ("none published", "hub sha256") else Checksum.parse(text, where)
    unpack = entry.get("unpack") or {}
    if kind == "zip-to-unpack" and unpack.get("layout") not in LAYOUTS:
        raise BioclipError(f"{where}: zip-to-unpack needs unpack.layout, one of {', '.join(LAYOUTS)}")
    repo_id, repo_path = entry.get("repo_id"), entry.get("repo_path")
    if kind.startswith("hf-") and not repo_id:
        raise BioclipError(f"{where}: {kind} needs repo_id")
    urls = _tuple(entry.get("urls"))
    repo_type = str(entry.get("repo_type", "model"))
    if repo_type not in ("model", "dataset"):
        raise BioclipError(f"{where}: repo_type {repo_type!r} is not model or dataset")
    if kind == "hf-file":
        if not repo_path:
            raise BioclipError(f"{where}: hf-file needs repo_path")
        repo = repo_id if repo_type == "model" else f"datasets/{repo_id}"
        urls = urls or (f"{HUB_ENDPOINT}/{repo}/resolve/{entry.get('revision', 'main')}/{repo_path}",)
    if kind == "hf-model":
        urls = urls or (f"{HUB_ENDPOINT}/{repo_id}",)
    dest = str(entry.get("dest") or "")
    if kind != "hf-model" and not dest:
        raise BioclipError(f"{where}: needs a `dest` (path relative to --root)")
    if dest.startswith("/") or ".." in Path(dest).parts:
        raise BioclipError(f"{where}: dest {dest!r} must be a relative path inside --root")
    return Artifact(
        name=name,
        target=target,
        kind=kind,
        dest=dest,
        urls=urls,
        what=what,
        size=parse_size(entry.get("size")),
        approx_size=parse_size(entry.get("approx_size")),
        checksum=checksum,
        hub_checksum=text.lower() == "hub sha256",
        presets=_tuple(entry.get("presets")),
        unpack_into=str(unpack["into"]) if unpack.get("into") is not None else None,
        layout=unpack.get("layout"),
        check_files={
            str(k): Checksum.parse(v, f"{where} check_files") for k, v in (entry.get("check_files") or {}).items()
        },
        repo_id=repo_id,
        repo_path=repo_path,
        repo_type=repo_type,
        revision=str(entry.get("revision", "main")),
        allow_patterns=_tuple(entry.get("allow_patterns")),
        note=str(entry.get("note") or ""),
    )


@cache
def _load(path: Path) -> tuple[Artifact, ...]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DataError(path, f"artifact registry {path} does not exist", "unset BIOCLIP_ARTIFACTS") from None
    except yaml.YAMLError as exc:
        raise DataError(path, f"artifact registry {path} is not valid YAML ({type(exc).__name__})") from None
    entries = (data or {}).get("artifacts") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise DataError(path, f"artifact registry {path} must hold a list under `artifacts:`")
    artifacts = tuple(_artifact(dict(e), f"{path.name} entry {i}") for i, e in enumerate(entries))
    names = [a.name for a in artifacts]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(path, f"artifact registry {path}: duplicate names {', '.join(dupes)}")
    return artifacts


def registry_path() -> Path:
    """The registry in use: $BIOCLIP_ARTIFACTS when set, else the packaged `artifacts.yaml`."""
    override = os.environ.get("BIOCLIP_ARTIFACTS")
    return Path(override).expanduser().resolve() if override else REGISTRY_FILE


def list_artifacts(target: str | None = None, path: str | Path | None = None) -> list[Artifact]:
    """All artifacts of the registry (or those of one target), in registry order."""
    artifacts = _load(Path(path).resolve() if path else registry_path())
    return [a for a in artifacts if target is None or a.target == target]


def get_artifact(name: str, path: str | Path | None = None) -> Artifact:
    """One artifact by name; the error lists the names that exist."""
    for artifact in list_artifacts(path=path):
        if artifact.name == name:
            return artifact
    names = ", ".join(a.name for a in list_artifacts(path=path))
    raise BioclipError(f"unknown artifact {name!r}; known: {names}")
