"""The image files of the raw BIOSCAN releases: read into shared buffers and checked.

:func:`read_file_into` reads a file into a uint8 buffer with plain system calls (no bytes object per file);
:func:`read_images` reads a list of files into one buffer and checks each (:func:`check_jpeg`: JPEG start and
end markers, or a full decode), optionally re-encoding (:func:`reencode_jpeg`); :class:`ImageReader` runs
those reads on threads while reading is slow (disk, network file systems).
"""

from __future__ import annotations

import io
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from bioclip_cli.data.worker_stream import shared_buffer

_READ_SIZE = 1 << 16  # first read() of a file: any 256-px JPEG in one call, and under malloc's mmap threshold
# bytes at the end of a file searched for the end-of-image marker: cameras append data after it (every BIOSCAN-1M
# original photograph ends with a 2,148-byte trailer); the marker cannot occur in the compressed data itself
_EOI_WINDOW = 1 << 16


def read_file_into(path: str | bytes, buf: np.ndarray, pos: int) -> tuple[np.ndarray, int]:
    """Read a whole file into the uint8 buffer `buf` at `pos`, with plain system calls (no intermediate bytes
    object); when it does not fit, into a new buffer twice as large (or more) holding `buf`'s first `pos` bytes.
    Returns the buffer and the file's length."""
    fd = os.open(path, os.O_RDONLY)
    try:
        n = os.readv(fd, [buf[pos:]]) if pos < len(buf) else 0
        while pos + n == len(buf):  # full: there may be more
            grown = np.empty(max(2 * len(buf), pos + n + _READ_SIZE), dtype=np.uint8)
            grown[: pos + n] = buf[: pos + n]
            buf = grown
            more = os.readv(fd, [buf[pos + n :]])
            if not more:
                break
            n += more
        return buf, n
    finally:
        os.close(fd)


def check_jpeg(data, decode: bool = False) -> str | None:
    """What is wrong with these image bytes (any bytes-like object), or None. Cheap marker check; full decode
    when `decode`."""
    data = memoryview(data).cast("B")
    if not len(data):
        return "empty file"
    if data[:3] != b"\xff\xd8\xff":
        return "not a JPEG (no start-of-image marker)"
    if data[-2:] != b"\xff\xd9" and bytes(data[-_EOI_WINDOW:]).rfind(b"\xff\xd9") < 0:
        return "truncated JPEG (no end-of-image marker)"
    from bioclip_cli.data.images import declared_size_problem, jpeg_size

    problem = declared_size_problem(jpeg_size(bytes(data)))  # the header only: no pixel is decoded
    if problem:
        return problem
    if decode:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
        except Exception as exc:  # Pillow raises several types for broken data
            return f"corrupt JPEG ({type(exc).__name__}: {exc})"
    return None


def reencode_jpeg(data: bytes, quality: int) -> bytes:
    """Decode any image and write it again as an RGB JPEG of the given quality (the upstream generator did)."""
    from PIL import Image

    from bioclip_cli.data.images import to_rgb

    with Image.open(io.BytesIO(data)) as img:
        rgb = to_rgb(img)
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def read_images(
    paths: list[str] | list[bytes], decode: bool, reencode_quality: int | None, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, list]:
    """Read and check image files (paths as str or file-system bytes) one after the other into one uint8 buffer
    (`out`, or a larger one when they do not fit): ``(data, ends, problems)``, file i being
    ``data[ends[i-1]:ends[i]]`` (empty when bad) and the problems ``(index, kind, detail)``: ``missing_image``,
    ``unreadable_image``, ``bad_image`` (details name the path as str). Re-encoded when `reencode_quality`."""
    buf = out if out is not None else np.empty(len(paths) * _READ_SIZE // 4 + _READ_SIZE, dtype=np.uint8)
    ends = np.empty(len(paths), dtype=np.int64)
    pos = 0
    problems = []
    for i, path in enumerate(paths):
        n = 0
        try:
            buf, n = read_file_into(path, buf, pos)
        except FileNotFoundError:
            problems.append((i, "missing_image", os.fsdecode(path)))
        except OSError as exc:
            problems.append((i, "unreadable_image", f"{os.fsdecode(path)}: {exc}"))
        else:
            problem = check_jpeg(buf[pos : pos + n], decode=decode or reencode_quality is not None)
            if problem is not None:
                problems.append((i, "bad_image", f"{problem}: {os.fsdecode(path)}"))
                n = 0
            elif reencode_quality is not None:
                data = reencode_jpeg(buf[pos : pos + n].tobytes(), reencode_quality)
                if pos + len(data) > len(buf):
                    grown = np.empty(2 * (pos + len(data)), dtype=np.uint8)
                    grown[:pos] = buf[:pos]
                    buf = grown
                n = len(data)
                buf[pos : pos + n] = np.frombuffer(data, dtype=np.uint8)
        pos += n
        ends[i] = pos
    return buf[:pos], ends, problems


@dataclass(slots=True, eq=False)
class _ReadTask:
    paths: list
    out: np.ndarray
    future: Future | None = None  # when handed to the threads
    result: tuple | None = None  # (data, ends, problems)


class ImageReader:
    """Reads and checks lists of image files (:func:`read_images`), results in submission order; in a pool
    of threads while reading is slow, by the caller while it is fast.

    Files in the page cache read in some 10 us, all of it CPU work under Python's GIL: threads would only
    take turns with the caller (and cost more, in GIL hand-overs). Files on a disk or a network share take
    0.1-10 ms, mostly waiting, which threads overlap. So the reader times each task (seconds per file, a
    moving average) and hands new tasks to the threads only while that is above `slow_file`; a task no
    thread has started when its result is wanted is run by the caller (so is the first task)."""

    def __init__(self, workers: int, decode: bool, reencode_quality: int | None, slow_file: float = 100e-6):
        self.options = (decode, reencode_quality)
        self.slow_file = slow_file
        self.seconds_per_file = 0.0  # the first task is read by the caller, and measures the files
        self.bytes_per_file = 0.0
        self._pool = ThreadPoolExecutor(max(1, workers))

    def submit(self, paths: list) -> _ReadTask:
        """Queue reading `paths` (into a :func:`~bioclip_cli.data.worker_stream.shared_buffer` as large as such
        files have been so far); pass the returned task to :meth:`result`."""
        capacity = int(len(paths) * self.bytes_per_file * 1.25) if self.bytes_per_file else _READ_SIZE // 4 * len(paths)
        task = _ReadTask(paths, shared_buffer(capacity + _READ_SIZE))
        if self.parallel and paths:
            task.future = self._pool.submit(self._timed, paths, task.out)
        return task

    def result(self, task: _ReadTask) -> tuple[np.ndarray, np.ndarray, list]:
        """``(data, ends, problems)`` of a submitted task (see :func:`read_images`)."""
        if task.future is None or task.future.cancel():
            return self._timed(task.paths, task.out)
        return task.future.result()

    @property
    def parallel(self) -> bool:
        """Whether new tasks go to the threads."""
        return self.seconds_per_file >= self.slow_file

    def _timed(self, paths: list, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
        start = time.perf_counter()
        result = read_images(paths, *self.options, out=out)
        if paths:
            per_file = (time.perf_counter() - start) / len(paths)
            self.seconds_per_file = 0.5 * self.seconds_per_file + 0.5 * per_file
            self.bytes_per_file = 0.5 * self.bytes_per_file + 0.5 * len(result[0]) / len(paths)
        return result

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ImageReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
