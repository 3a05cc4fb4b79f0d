"""The one way bioscan-clip writes an output file: whole or not at all, at the place the user meant.

`atomic_output(path)` yields a temporary path in the target's folder; the caller writes it (any library:
json, csv, h5py, numpy), and on success the temporary file is flushed to disk and renamed over the
target. On any failure the temporary file is removed and the target is untouched. :func:`write_text` and
:func:`write_bytes` are the common cases.

What "the place the user meant" is (the faults it guards against are in docs/architecture.md, "Outputs"):
- a symbolic link is followed, and its target is replaced (the link stays a link);
- a directory, device (e.g. `/dev/full`), FIFO or socket at the path is refused with one sentence, never
  replaced by a regular file;
- a missing parent folder is created; a parent that cannot be created or written is one sentence;
- "No space left on device" names the file and, when known, the bytes it needed; :func:`check_free_space`
  refuses a known-size output before any work.

The standard library has no atomic replace that follows links and refuses special files, and the
packages that offer atomic writes (e.g. `atomicwrites`) are unmaintained or do neither; hence this module.
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bioclip_cli.errors import BioclipError


class OutputError(BioclipError):
    """An output file cannot be written where it was asked for."""


def resolve_output(path: str | Path) -> Path:
    """The regular file a write to `path` should replace (links followed); OutputError when it cannot be one."""
    path = Path(path).expanduser()
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}", "choose another output path") from exc
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, pipe or socket)"
        hint = f"give a file name inside it, e.g. {path / 'results.json'}" if stat.S_ISDIR(st.st_mode) else None
        raise OutputError(f"{path} is {kind}; refusing to replace it with an output file", hint)
    return target


def temporary_name(target: Path, tag: str = "tmp") -> Path:
    """A hidden name beside `target`, unique to this process and call (two writers never share one)."""
    return target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{tag}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file under `folder`, then the folders themselves (before a folder is renamed into place)."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(Path(root) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a new temporary folder beside `path`; when the block succeeds it replaces the folder `path`.

    The temporary name is unique to this process and call; on any failure it is removed and `path` is
    untouched. An existing folder at `path` is moved aside, the new one renamed in, the old one deleted.
    """
    import shutil

    target = Path(path)
    if target.is_symlink():
        target = Path(os.path.realpath(target))
    if target.exists() and not target.is_dir():
        raise OutputError(f"{path} exists and is not a folder; refusing to replace it", "choose another path")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise describe_os_error(exc, Path(path)) from exc
    tmp = temporary_name(target)
    old = temporary_name(target, "old")
    try:
        tmp.mkdir()
        yield tmp
        fsync_tree(tmp)
        if target.exists():
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
        _fsync_dir(target.parent)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise describe_os_error(exc, Path(path)) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


SPACE_MARGIN = 1 << 20  # metadata, ids, a labels JSON: small beside the arrays an estimate counts


def check_free_space(folder: str | Path, target: str | Path, needed: int) -> None:
    """OutputError before any writing when the disk holding `folder` has less than `needed` bytes (plus a
    small margin) free: a long job is refused at once, not after hours of work."""
    import shutil

    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed + SPACE_MARGIN:
        raise OutputError(
            f"No space left on device writing {target} ({needed + SPACE_MARGIN:,} bytes needed, {free:,} free)",
            "free some space, or write elsewhere with --out",
        )


def describe_os_error(exc: OSError, path: Path, needed: int | None = None) -> OutputError:
    """One sentence for an OSError met while writing `path`."""
    if exc.errno == errno.ENOSPC:
        size = f" ({needed:,} bytes needed)" if needed else ""
        return OutputError(f"No space left on device writing {path}{size}", "free some space or choose another disk")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"no permission to write {path} ({exc.strerror})", "choose a folder you can write to")
    if exc.errno == errno.ENOENT:
        return OutputError(f"cannot write {path}: its folder does not exist and cannot be made", "check the path")
    if exc.errno in (errno.EISDIR, errno.ENOTDIR):
        return OutputError(f"cannot write {path}: {exc.strerror}", "give a file path, not a folder")
    return OutputError(f"cannot write {path}: {exc.strerror or exc}", "check the path and the disk")


@contextmanager
def atomic_output(path: str | Path, *, needed: int | None = None, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; rename it over `path` (links followed) when the block succeeds."""
    target = resolve_output(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise describe_os_error(exc, Path(path), needed) from exc
    tmp = temporary_name(target)
    try:
        yield tmp
        if fsync and tmp.exists():
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, target)
        if fsync:
            _fsync_dir(target.parent)
    except OSError as exc:
        _remove(tmp)
        raise describe_os_error(exc, Path(path), needed) from exc
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path written (a link's target)."""
    with atomic_output(path, needed=len(data)) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
    return resolve_output(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path written (a link's target)."""
    return write_bytes(path, text.encode("utf-8"))
