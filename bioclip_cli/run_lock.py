"""One writer per run directory (or output file): an exclusive lock held for the life of a command.

`run_lock(folder, "train")` creates `folder/.lock`, takes an exclusive `fcntl.flock` on it without waiting,
and writes the holder's pid, host and command into it. A second process that asks for the same lock gets
:class:`InUse`: "run r is in use by process N (host H)". The kernel drops a flock when its process dies
(even after `kill -9`), so a lock file left by a dead process is simply taken over, with a message naming
the process that left it. On a filesystem without flock (some network mounts) the pid written in the file
decides: a live process on the same host keeps the lock, a dead one's lock is taken over.

The other processes of a multi-process launch (`accelerate launch`, torchrun: `RANK` > 0) share the
main process's lock and take none themselves.

The standard library's `fcntl.flock` does the locking; the `filelock` package would also do it but records
no holder to name in the message and cannot tell a stale lock from a live one; hence this small module.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bioclip_cli.errors import BioclipError

LOCK_NAME = ".lock"


class InUse(BioclipError):
    """Another live process holds the lock of a run directory or output."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096).decode() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _in_use(label: str, holder: dict, hint: str | None) -> InUse:
    pid, host = holder.get("pid", "?"), holder.get("host", "?")
    what = f" ({holder['command']})" if holder.get("command") else ""
    return InUse(
        f"{label} is in use by process {pid} (host {host}){what}",
        hint or "wait for it to finish, or stop that process first",
    )


def is_secondary_process() -> bool:
    """True in the non-main processes of a multi-process launch (they share the main process's lock)."""
    try:
        return int(os.environ.get("RANK", "0")) > 0
    except ValueError:
        return False


@contextmanager
def exclusive_lock(
    lock_path: str | Path,
    label: str,
    command: str = "",
    *,
    hint: str | None = None,
    on_takeover: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Hold an exclusive lock on `lock_path` for the block; InUse naming the holder when another process has it."""
    lock_path = Path(lock_path)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command}
    created = not lock_path.parent.exists()
    while True:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            flock = True
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise _in_use(label, holder, hint) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
            flock = False
        try:  # the file may have been removed (released) between our open and our flock: start over
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        previous = _holder(fd)
        if previous.get("pid") not in (None, me["pid"]):
            local = previous.get("host") == me["host"]
            if not flock and local and _alive(int(previous["pid"])):
                raise _in_use(label, previous, hint)
            if on_takeover is not None:
                on_takeover(
                    f"took over the lock of {label} left by process {previous['pid']} (host {previous.get('host', '?')}),"
                    " which is no longer running"
                )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(me).encode())
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    try:
        yield lock_path
    finally:
        try:  # remove it while still holding it: a process that opened it meanwhile sees another inode and retries
            lock_path.unlink()
        except OSError:
            pass
        os.close(fd)
        if created:  # a folder made only to hold the lock (e.g. a refused train) is not left behind
            try:
                lock_path.parent.rmdir()
            except OSError:
                pass


@contextmanager
def run_lock(
    folder: str | Path, command: str = "", *, on_takeover: Callable[[str], None] | None = None
) -> Iterator[Path | None]:
    """Hold the run directory `folder` exclusively (`folder/.lock`) for the block; InUse when another has it."""
    folder = Path(folder)
    if is_secondary_process():
        yield None
        return
    with exclusive_lock(
        folder / LOCK_NAME,
        f"run {folder}",
        command,
        hint=f"wait for it to finish, or use another run directory (e.g. --out {folder}-2)",
        on_takeover=on_takeover,
    ) as path:
        yield path
