"""WorkerStream: items made in a forked worker, in order, in bounded memory, errors raised in the caller."""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pytest

from bioclip_cli.data.worker_stream import WorkerStream, fork_available, shared_buffer
from bioclip_cli.errors import DataError

pytestmark = pytest.mark.skipif(not fork_available(), reason="worker processes are forked (Linux)")


def items(n: int, made=None):
    """Items of every kind the build hands over: arrays in a lent buffer, other arrays, plain objects, one item
    larger than a slot (sent through the pipe), one without any array."""
    for i in range(n):
        if made is not None:
            made.value = i + 1
        lent = shared_buffer(1000)
        lent[:] = i % 251
        if i == 3:
            yield {"i": i, "big": np.full(5000, 7, dtype=np.int64)}  # 40 kB: more than a slot
        elif i == 4:
            yield {"i": i, "text": "no arrays"}
        else:
            yield {"i": i, "lent": lent[: 10 + i], "ids": np.array([b"P-%d" % i] * 3), "rows": np.arange(i)}


def check(got: list, n: int) -> None:
    assert [item["i"] for item in got] == list(range(n))
    for i, item in enumerate(got):
        if i == 3:
            assert item["big"].sum() == 5000 * 7
        elif i == 4:
            assert item["text"] == "no arrays"
        else:
            assert item["lent"].tolist() == [i % 251] * (10 + i)
            assert item["ids"].tolist() == [b"P-%d" % i] * 3 and item["rows"].tolist() == list(range(i))


@pytest.mark.parametrize("enabled", [True, False])
def test_items_arrive_in_order_and_whole(enabled):
    n = 40  # several times the slots: each is given back and used again
    with WorkerStream(lambda: items(n), enabled=enabled, slots=3, slot_bytes=16 << 10) as stream:
        got = []
        for item in stream:  # views of a slot are valid until the next item: keep copies
            got.append({k: v.copy() if isinstance(v, np.ndarray) else v for k, v in item.items()})
    check(got, n)


def test_the_worker_stays_a_few_items_ahead():
    made = multiprocessing.get_context("fork").Value("i", 0)
    with WorkerStream(lambda: items(100, made), slots=4, slot_bytes=16 << 10) as stream:
        it = iter(stream)
        next(it)
        time.sleep(0.5)
        ahead = made.value
        rest = sum(1 for _ in it)
    assert ahead <= 4 + 2  # the slots it holds, the item in the pipe, the one waiting for a slot
    assert rest == 99 and made.value == 100


def failing():
    yield {"i": 0, "rows": np.arange(3)}
    raise DataError("/data/meta.csv", "meta.csv is not UTF-8 text", "save the metadata as UTF-8")


@pytest.mark.parametrize("enabled", [True, False])
def test_an_error_in_the_worker_is_raised_here(enabled):
    with WorkerStream(failing, enabled=enabled) as stream:
        it = iter(stream)
        assert next(it)["rows"].tolist() == [0, 1, 2]
        with pytest.raises(DataError) as caught:
            next(it)
    assert str(caught.value) == "meta.csv is not UTF-8 text" and caught.value.hint == "save the metadata as UTF-8"
    assert str(caught.value.path) == "/data/meta.csv"


def test_stopping_early_stops_the_worker():
    stream = WorkerStream(lambda: items(10_000), slots=2, slot_bytes=16 << 10)
    process = stream._process
    with stream:
        for item in stream:
            if item["i"] == 5:
                break
    assert not process.is_alive() and stream._process is None


def test_nested_streams():
    """A worker may read from a stream of its own (build-hdf5: the image reader reads the parser's blocks)."""

    def doubled():
        with WorkerStream(lambda: items(12), slots=3, slot_bytes=16 << 10) as inner:
            for item in inner:
                yield {"i": item["i"], "twice": 2 * item.get("rows", np.arange(0))}

    with WorkerStream(doubled, slots=3, slot_bytes=16 << 10) as outer:
        got = [(item["i"], item["twice"].tolist()) for item in outer]
    assert got == [(i, [] if i in (3, 4) else [2 * r for r in range(i)]) for i in range(12)]


def gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie nobody reaped counts: its parent may be gone too)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return any(line.startswith("State:") and "Z" in line for line in fh)
    except FileNotFoundError:
        return True


def test_a_worker_whose_consumer_is_gone_exits():
    """Ctrl-C stops the build's reader process while its parser process waits for a free slot: the parser
    must see its pipes end, not wait forever (it once did: it held copies of its consumer's pipe ends)."""

    def outer():
        inner = WorkerStream(lambda: items(10_000), slots=2, slot_bytes=16 << 10)
        for item in inner:
            yield {"inner_pid": inner._process.pid, "i": item["i"]}

    with WorkerStream(outer, slots=2, slot_bytes=16 << 10) as stream:
        inner_pid = next(iter(stream))["inner_pid"]
        time.sleep(0.2)  # both workers now wait for slots
    deadline = time.time() + 10
    while not gone(inner_pid) and time.time() < deadline:
        time.sleep(0.05)
    assert gone(inner_pid)
