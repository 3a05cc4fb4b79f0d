"""What a downloaded file must look like when no published checksum vouches for its bytes.

A mirror that answers with an HTML error page, or a truncated transfer that happens to have no size on
record, must not end up under the final name. :func:`check_format` opens the file the way its users will:

- `.pth` / `.pt` / `.bin`: a zip or pickle that `torch.load(weights_only=True)` reads into a state dict of
  tensors with the top-level keys of a BIOSCAN-CLIP / CLIBD checkpoint or of BarcodeBERT;
- `.hdf5` / `.h5`: HDF5 that h5py opens, with the expected groups (`seen`/`key` for an extracted-embedding
  file, `all_keys` for a dataset);
- `.json`: parses, to an object;
- `.zip`: a zip archive (its members are checked when unpacked).

:func:`looks_like` is the cheap version (the first bytes only) used to decide whether a file already on
disk may be skipped on a rerun. Other suffixes (csv, tsv, txt) have no format to check.
"""

from __future__ import annotations

import json
from pathlib import Path

from bioclip_cli.errors import DataError

_SUFFIXES = {".pth": "pth", ".pt": "pth", ".bin": "pth", ".hdf5": "hdf5", ".h5": "hdf5", ".json": "json", ".zip": "zip"}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_NAMES = {"pth": "a PyTorch checkpoint", "hdf5": "an HDF5 file", "json": "a JSON file", "zip": "a zip archive"}


def expected_format(dest: str | Path) -> str | None:
    """pth, hdf5, json or zip from the file name; None when the name implies no checkable format."""
    return _SUFFIXES.get(Path(dest).suffix.lower())


def looks_like(path: str | Path, fmt: str) -> bool:
    """True when the first bytes of `path` fit `fmt` (a quick test; :func:`check_format` is the real one)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    if fmt == "pth":
        return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"  # torch's zip format, or a legacy pickle
    if fmt == "hdf5":
        return head.startswith(_HDF5_SIGNATURE)
    if fmt == "json":
        return head.lstrip()[:1] in (b"{", b"[")
    if fmt == "zip":
        return head.startswith((b"PK\x03\x04", b"PK\x05\x06"))
    return True


def _not_a(dest: Path, fmt: str, why: str) -> DataError:
    return DataError(
        dest,
        f"the file downloaded for {dest} is not {_NAMES[fmt]} ({why})",
        "the source served something else (an error page?); try again later, or pass --mirror BASE_URL",
    )


def _preview(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(40)
    text = head.decode("utf-8", "replace").replace("\n", " ").strip()
    return f"it starts with {text!r}" if text.isprintable() and text else f"{path.stat().st_size} bytes"


def check_format(path: str | Path, dest: str | Path | None = None) -> str:
    """Check that `path` (the bytes meant for `dest`) is what `dest`'s name says; returns what it is.

    DataError naming `dest` otherwise.
    """
    path = Path(path)
    dest = Path(dest) if dest is not None else path
    fmt = expected_format(dest)
    if fmt is None:
        return "unchecked"
    if not looks_like(path, fmt):
        raise _not_a(dest, fmt, _preview(path))
    if fmt == "pth":
        return _check_pth(path, dest)
    if fmt == "hdf5":
        return _check_hdf5(path, dest)
    if fmt == "json":
        try:
            data = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError) as exc:
            raise _not_a(dest, fmt, f"it does not parse: {exc}") from None
        if not isinstance(data, dict):
            raise _not_a(dest, fmt, f"it holds a {type(data).__name__}, not an object")
        return "a JSON object"
    import zipfile

    if not zipfile.is_zipfile(path):
        raise _not_a(dest, fmt, "no zip directory at its end")
    return "a zip archive"


def _check_pth(path: Path, dest: Path) -> str:
    from bioclip_cli.models.published import is_barcodebert, is_bioscan_clip, strip_module_prefix
    from bioclip_cli.models.state_file import read_torch_file

    try:
        state = strip_module_prefix(read_torch_file(path))
    except DataError as exc:
        raise _not_a(dest, "pth", exc.message.replace(str(path), "it")) from None
    keys = list(state)
    if is_bioscan_clip(keys):
        return "a BIOSCAN-CLIP checkpoint"
    if is_barcodebert(keys):
        return "a BarcodeBERT checkpoint"
    shown = ", ".join(keys[:4]) + (" ..." if len(keys) > 4 else "")
    raise _not_a(dest, "pth", f"a state dict, but not of BIOSCAN-CLIP or BarcodeBERT: its keys are {shown}")


def _check_hdf5(path: Path, dest: Path) -> str:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            groups = set(f.keys())
    except OSError as exc:
        raise _not_a(dest, "hdf5", f"h5py cannot open it: {exc}") from None
    if dest.name.startswith("extracted_feature"):
        needed, what = {"seen", "key"}, "an extracted-embedding file"
    else:
        needed, what = {"all_keys"}, "a BIOSCAN dataset"
    missing = sorted(needed - groups)
    if missing:
        raise _not_a(dest, "hdf5", f"an HDF5 file without the group(s) {', '.join(missing)} of {what}")
    return what
