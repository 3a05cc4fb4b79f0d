"""A stream of Python objects made by a forked worker process (`build-hdf5` parses the metadata and reads the
image files so).

``with WorkerStream(produce) as items: for item in items: ...`` iterates ``produce()`` run in a worker
process, while this process works on the items already made. The large parts of each item (numpy arrays:
pickle protocol 5's out-of-band buffers) travel through a memory map shared with the worker, in a few fixed
slots (so the worker stays a few items ahead, in bounded memory); the rest, and any item too large for a
slot, is pickled through a pipe. **An item's arrays are views of its slot, valid until the next item is
asked for**, when the slot goes back to the worker: copy what is kept longer (no copy is made here). An
exception in the worker is raised here; the worker ignores Ctrl-C (this process handles it and stops it).

The worker is forked when the stream is made: make it before this process starts any thread or opens an
HDF5 file. Where ``fork`` is not the platform's way (macOS, Windows), or when `enabled` is false,
``produce()`` runs in this process, with the same items.
"""

from __future__ import annotations

import mmap
import multiprocessing
import pickle
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")

_END = "end"
_ITEM = "item"
_ERROR = "error"


def fork_available() -> bool:
    """Whether a worker process can be forked safely here (Linux)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


class WorkerStream(Generic[T]):
    """The items of ``produce()``, made in a forked worker process (see the module's description)."""

    def __init__(
        self, produce: Callable[[], Iterable[T]], enabled: bool = True, slots: int = 8, slot_bytes: int = 16 << 20
    ):
        self._produce = produce
        self._process = None
        if not (enabled and fork_available()):
            return
        self._slot_bytes = slot_bytes
        self._ring = mmap.mmap(-1, slots * slot_bytes)  # anonymous and shared: the forked worker sees the same pages
        context = multiprocessing.get_context("fork")
        self._items, items_out = context.Pipe(duplex=False)
        free_in, self._free = context.Pipe(duplex=False)
        ends = (items_out, free_in, (self._items, self._free))
        self._process = context.Process(target=_work, args=(produce, self._ring, slots, slot_bytes, *ends))
        self._process.start()
        items_out.close()
        free_in.close()

    def __iter__(self) -> Iterator[T]:
        if self._process is None:
            yield from self._produce()
            return
        ring = memoryview(self._ring)
        lent = None  # the slot of the item last yielded
        while True:
            if lent is not None:
                try:
                    self._free.send(lent)
                except BrokenPipeError:  # the worker has made every item and gone
                    pass
                lent = None
            try:
                message = self._items.recv()
            except EOFError:
                raise RuntimeError(f"the worker process stopped (exit code {self._process.exitcode})") from None
            kind = message[0]
            if kind == _END:
                return
            if kind == _ERROR:
                raise message[1]
            _, slot, spans, inband = message
            if slot is None:
                yield pickle.loads(inband)
                continue
            base = slot * self._slot_bytes
            lent = slot
            yield pickle.loads(inband, buffers=[ring[base + lo : base + hi] for lo, hi in spans])

    def close(self) -> None:
        if self._process is None:
            return
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._items.close()
        self._free.close()
        try:
            self._ring.close()
        except BufferError:  # views of it are still alive: unmapped with the last of them
            pass
        self._process = None

    def __enter__(self) -> WorkerStream[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def shared_buffer(nbytes: int) -> np.ndarray:
    """A new uint8 array of `nbytes` for an item being made: in a worker process, the memory of a free slot (the
    item that holds it, or a view of it, is then sent without copying those bytes; a slot no item took is free
    again once the array is gone); elsewhere, or when larger than a slot, ordinary memory. A worker that holds
    as many of these as there are slots, before yielding the item of the first, waits forever: keep fewer."""
    if _LENDER is not None and nbytes <= _LENDER.slot_bytes:
        return _LENDER.lend(nbytes)
    return np.empty(nbytes, dtype=np.uint8)


_LENDER: _Slots | None = None  # in a worker process: its slots


class _Slots:
    """The worker's side of the slots: which are free, lent to the producer (:func:`shared_buffer`), or held
    by the consumer (given back through `free_in`)."""

    def __init__(self, ring: mmap.mmap, slots: int, slot_bytes: int, free_in):
        self.slot_bytes = slot_bytes
        self._memory = np.frombuffer(ring, dtype=np.uint8)
        self._base = self._memory.ctypes.data
        self._free = list(range(slots))
        self._free_in = free_in
        self._lent: dict[int, int] = {}  # slot -> bytes lent
        self._sent: set[int] = set()
        self._lock = threading.RLock()  # (re-entered when a lent array dies while the lock is held)

    def take(self) -> int:
        """A free slot (waiting for the consumer to give one back)."""
        with self._lock:
            while self._free_in.poll():
                self._given_back(self._free_in.recv())
            if not self._free:
                self._given_back(self._free_in.recv())
            return self._free.pop()

    def _given_back(self, slot: int) -> None:
        self._sent.discard(slot)
        if slot not in self._lent:
            self._free.append(slot)

    def lend(self, nbytes: int) -> np.ndarray:
        with self._lock:
            slot = self.take()
            self._lent[slot] = nbytes
        array = self._memory[slot * self.slot_bytes : slot * self.slot_bytes + nbytes]
        weakref.finalize(array, self._returned, slot)
        return array

    def _returned(self, slot: int) -> None:  # the lent array is gone
        with self._lock:
            self._lent.pop(slot, None)
            if slot not in self._sent:
                self._free.append(slot)

    def place(self, raws: list[memoryview]) -> tuple[int, list[tuple[int, int]]] | None:
        """A slot holding `raws` (the buffers already in a lent slot stay where they are; the others are copied
        after them) and each one's span in it, or None when they do not fit one slot."""
        addresses = [np.frombuffer(raw, dtype=np.uint8).ctypes.data if raw.nbytes else 0 for raw in raws]
        inside = [a - self._base for a in addresses]
        lent = {p // self.slot_bytes for p, raw in zip(inside, raws) if raw.nbytes and 0 <= p < len(self._memory)}
        lent &= set(self._lent)
        slot = min(lent) if lent else None
        base = None if slot is None else slot * self.slot_bytes
        held = [base is not None and base <= p < base + self.slot_bytes for p in inside]
        used = max([p - base + raw.nbytes for p, raw, h in zip(inside, raws, held) if h], default=0)
        if used + sum(raw.nbytes for raw, h in zip(raws, held) if not h) > self.slot_bytes:
            return None
        if slot is None:
            slot = self.take()
            base = slot * self.slot_bytes
        spans = []
        for p, raw, h in zip(inside, raws, held):
            if h:
                spans.append((p - base, p - base + raw.nbytes))
            else:
                self._memory[base + used : base + used + raw.nbytes] = np.frombuffer(raw, dtype=np.uint8)
                spans.append((used, used + raw.nbytes))
                used += raw.nbytes
        with self._lock:
            self._sent.add(slot)
        return slot, spans


def _work(produce, ring: mmap.mmap, slots: int, slot_bytes: int, items_out, free_in, parent_ends) -> None:
    """The worker: each item of ``produce()`` into a slot of `ring` (or the pipe), announced on `items_out`."""
    global _LENDER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for end in parent_ends:  # (copies forked with this process: a pipe ends only when every copy of its end is)
        end.close()
    _LENDER = lender = _Slots(ring, slots, slot_bytes, free_in)
    try:
        for item in produce():
            buffers: list[pickle.PickleBuffer] = []
            inband = pickle.dumps(item, protocol=5, buffer_callback=buffers.append)
            placed = lender.place([b.raw() for b in buffers]) if buffers else None
            del buffers
            if placed is None:
                items_out.send((_ITEM, None, None, pickle.dumps(item, protocol=5)))
            else:
                items_out.send((_ITEM, *placed, inband))
            del item
        items_out.send((_END,))
    except (BrokenPipeError, EOFError):  # the consumer has gone (stopped early, interrupted): so does the worker
        return
    except BaseException as exc:  # handed to the consumer, which raises it
        try:
            try:
                items_out.send((_ERROR, exc))
            except (pickle.PicklingError, TypeError, AttributeError):  # an exception that does not pickle
                items_out.send((_ERROR, RuntimeError(f"{type(exc).__name__}: {exc}")))
        except (BrokenPipeError, EOFError):
            return
