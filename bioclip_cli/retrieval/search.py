"""Nearest-neighbour search for the retrieval evaluation (docs/method.md, Evaluation): exact inner product on
unit vectors.

The published evaluation L2-normalises queries and keys, casts them to float32 and searches a faiss
`IndexFlatIP` for the top max(k) keys. :class:`FlatIndex` does the same, on the GPU when faiss was built
with CUDA (`faiss-gpu`), chunked over queries so that memory stays bounded; its neighbour lists, ties
included, are those of one `IndexFlatIP.search` call over all queries (chunks are never so small that
faiss switches to splitting the keys over threads, which orders exact ties differently).

A torch path (matmul + top-k, for a GPU machine without faiss-gpu: `device="cuda"` or `"mps"`) and the
faiss GPU path return the same lists (see :class:`FlatIndex`). :class:`IVFIndex` is an opt-in approximate
index for key sets too large for exact search; :func:`ivf_search` reports its recall@k against exact
search on a sample of queries.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bioclip_cli.errors import BioclipError

DEFAULT_CHUNK = 16384  # queries per search call (the progress step; faiss bounds its own working memory)
_MIN_CHUNK = 64  # fewest queries per faiss call (see _min_chunk)
_TORCH_BUDGET = 1 << 30  # bytes of the [chunk, n_keys] score matrix of the torch path


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm, computed in the input's precision, then cast to float32 (compat).

    This is what the published script does (normalise, then `.astype(float32)`), so float64 files give the
    same float32 vectors as there. Zero rows stay zero.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating) or x.dtype.itemsize < 4:
        x = x.astype(np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms == 0] = 1
    return (x / norms[:, None]).astype(np.float32, copy=False)


def _faiss():
    import faiss

    return faiss


def faiss_gpu_count() -> int:
    """GPUs that this faiss build can use (0 for faiss-cpu)."""
    faiss = _faiss()
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def _torch_cuda() -> bool:
    """Whether torch sees a CUDA GPU; without an NVIDIA device node torch is not even imported."""
    if "torch" not in sys.modules and not os.path.exists("/dev/nvidiactl"):
        return False
    import torch

    return torch.cuda.is_available()


def resolve_backend(device: str | None = "auto") -> tuple[str, str]:
    """`(backend, device)` for a device request: faiss-gpu, faiss-cpu, or torch (a GPU without faiss-gpu).

    auto: faiss-gpu if it sees a GPU, else torch on CUDA if there is one, else faiss on the CPU; cpu;
    cuda or cuda:N (faiss-gpu, or torch when faiss has no GPU); mps (torch); torch or torch:DEVICE (the
    torch path explicitly, e.g. to test it on the CPU).
    """
    if device in ("auto", None):
        if faiss_gpu_count() > 0:
            return "faiss-gpu", "cuda:0"
        return ("torch", "cuda:0") if _torch_cuda() else ("faiss-cpu", "cpu")
    if device == "cpu":
        return "faiss-cpu", "cpu"
    if device.startswith("torch"):
        return "torch", device.partition(":")[2] or "cpu"
    if device == "mps" or device.startswith("cuda"):
        device = "cuda:0" if device == "cuda" else device
        if device.startswith("cuda:") and device[5:].isdigit():
            if faiss_gpu_count() > int(device[5:]):
                return "faiss-gpu", device
        elif device != "mps":
            raise BioclipError(f"unknown search device {device!r}", "use auto, cpu, cuda, cuda:N or mps")
        import torch

        available = torch.backends.mps.is_available() if device == "mps" else torch.cuda.is_available()
        if not available:
            raise BioclipError(f"device {device!r} was asked for, but it is not available here", "use --device cpu")
        return "torch", device
    raise BioclipError(f"unknown search device {device!r}", "use auto, cpu, cuda, cuda:N or mps")


def _min_chunk(n: int) -> int:
    """The fewest queries per faiss call that keep faiss on the code path of one call over all `n`.

    Fewer queries than threads make faiss split the keys over threads (exact ties come out in another
    order), and from `distance_compute_blas_threshold` queries on it computes scores with BLAS instead.
    """
    faiss = _faiss()
    minimum = max(_MIN_CHUNK, faiss.omp_get_max_threads())
    blas = int(faiss.cvar.distance_compute_blas_threshold)
    return max(minimum, blas) if n >= blas else minimum


def _chunks(n: int, size: int, minimum: int = 1) -> list[tuple[int, int]]:
    """Row ranges of `size` queries (at least `minimum`); a last range under `minimum` joins the one before."""
    size = max(size, minimum)
    bounds = [(s, min(n, s + size)) for s in range(0, n, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < minimum:
        (s, _), _last = bounds[-2], bounds.pop()
        bounds[-1] = (s, n)
    return bounds


def _check_k(k: int, n_keys: int) -> None:
    if not 1 <= k <= n_keys:
        raise ValueError(f"k={k} must be between 1 and the number of keys ({n_keys})")


def _unit_rows(x: np.ndarray, normalize: bool) -> np.ndarray:
    """:func:`l2_normalize` of `x`, or (`normalize=False`: already unit rows) `x` as contiguous float32."""
    return l2_normalize(x) if normalize else np.ascontiguousarray(x, dtype=np.float32)


class _ChunkedIndex:
    """The search loop of the indexes: query chunks (:meth:`_bounds`), each searched (:meth:`_search_chunk`)
    into the preallocated [Q, k] results."""

    n_keys: int
    dim: int

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        normalize: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`(scores float32 [Q, k], indices int64 [Q, k])`, best first; `progress(n)` after each chunk."""
        queries = _unit_rows(queries, normalize)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries of shape {queries.shape} do not match keys of width {self.dim}")
        _check_k(k, self.n_keys)
        n = queries.shape[0]
        scores = np.empty((n, k), dtype=np.float32)
        indices = np.empty((n, k), dtype=np.int64)
        for s, e in self._bounds(n, chunk_size):
            scores[s:e], indices[s:e] = self._search_chunk(queries[s:e], k)
            if progress is not None:
                progress(e - s)
        return scores, indices

    def _bounds(self, n: int, chunk_size: int) -> list[tuple[int, int]]:
        return _chunks(n, chunk_size)

    def _search_chunk(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class FlatIndex(_ChunkedIndex):
    """Exact inner-product search over fixed keys; build once, search with several query sets.

    `keys` are L2-normalised here unless `normalize=False` (then they must be unit float32 rows already).
    `device`: auto (faiss GPU if present, else faiss CPU), cpu, cuda[:N] (faiss GPU, or torch if faiss has
    no GPU), or torch[:DEVICE] for the torch path explicitly.

    The GPU and torch paths give faiss CPU's neighbour lists: they take the top k+1 keys, list equal scores
    by descending id (faiss's order), and hand the queries whose k-th and (k+1)-th scores tie, where faiss's
    pick among the tied keys depends on its scan, to a faiss CPU index.
    """

    def __init__(self, keys: np.ndarray, *, device: str = "auto", normalize: bool = True):
        keys = _unit_rows(keys, normalize)
        if keys.ndim != 2:
            raise ValueError(f"keys must be a 2-D array, got shape {keys.shape}")
        self.n_keys, self.dim = keys.shape
        self.backend, self.device = resolve_backend(device)
        self._unit_keys = keys
        self._cpu_index = None
        if self.backend == "torch":
            import torch

            self._keys = torch.from_numpy(keys).to(self.device)
        elif self.backend == "faiss-gpu":
            faiss = _faiss()
            self._res = faiss.StandardGpuResources()
            self._index = faiss.GpuIndexFlatIP(self._res, self.dim, _gpu_config(self.device))
            self._index.add(keys)
        else:
            self._cpu_index = self._index = _faiss_flat(keys)

    def _bounds(self, n: int, chunk_size: int) -> list[tuple[int, int]]:
        if self.backend == "torch":
            chunk_size = max(1, min(chunk_size, _TORCH_BUDGET // (4 * self.n_keys)))
        return _chunks(n, chunk_size, _min_chunk(n) if self.backend == "faiss-cpu" else 1)

    def _search_chunk(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.backend == "faiss-cpu":
            return self._index.search(queries, k)
        return self._accelerated(queries, k)

    def _accelerated(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        width = min(self.n_keys, k + 1)
        if self.backend == "torch":
            vals, idx = _torch_topk(queries, self._keys, width)
        else:
            vals, idx = self._index.search(queries, width)
        scores, indices = _order_ties(vals[:, :k], idx[:, :k])
        if width > k:
            tied = np.flatnonzero(vals[:, k - 1] == vals[:, k])
            if tied.size:
                scores[tied], indices[tied] = self._faiss_cpu(queries[tied], k)
        return scores, indices

    def _faiss_cpu(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss CPU's answer for a few queries, padded so that faiss takes its many-query code path."""
        if self._cpu_index is None:
            self._cpu_index = _faiss_flat(self._unit_keys)
        n = queries.shape[0]
        padded = np.resize(queries, (max(n, _min_chunk(n)), self.dim))
        scores, indices = self._cpu_index.search(padded, k)
        return scores[:n], indices[:n]


def _faiss_flat(unit_keys: np.ndarray):
    index = _faiss().IndexFlatIP(unit_keys.shape[1])
    index.add(unit_keys)
    return index


def _gpu_config(device: str):
    config = _faiss().GpuIndexFlatConfig()
    config.device = int(device.split(":")[1])
    return config


def _order_ties(scores: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by score descending and, among equal scores, by id descending (faiss CPU's order)."""
    order = np.lexsort((-indices, -scores), axis=-1)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(indices, order, 1)


def _torch_topk(queries: np.ndarray, keys, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best keys of each query by a torch matmul + top-k (float32; TF32 stays off)."""
    import torch

    q = torch.from_numpy(queries).to(keys.device)
    vals, idx = torch.topk(q @ keys.T, k, dim=1, largest=True, sorted=True)
    return vals.cpu().numpy(), idx.cpu().numpy().astype(np.int64)


def exact_search(
    queries: np.ndarray,
    keys: np.ndarray,
    k: int,
    *,
    device: str = "auto",
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k keys of each query by cosine similarity: `(scores float32 [Q, k], indices int64 [Q, k])`.

    Queries and keys are re-L2-normalised (in their own precision, then float32) and searched with faiss's
    exact `IndexFlatIP` (see :class:`FlatIndex` for `device`), `chunk_size` queries at a time.
    """
    return FlatIndex(keys, device=device).search(queries, k, chunk_size=chunk_size)


# ----------------------------------------------------------------------------------------- approximate


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top-k ids that the approximate top-k also holds."""
    if approx.shape != exact.shape:
        raise ValueError(f"shapes differ: {approx.shape} vs {exact.shape}")
    if approx.size == 0:
        return 1.0
    found = (approx[:, :, None] == exact[:, None, :]) & (exact[:, None, :] >= 0)
    return float(found.any(axis=1).sum(axis=1).mean() / exact.shape[1])


@dataclass(frozen=True)
class IVFSettings:
    nlist: int
    nprobe: int
    n_train: int


class IVFIndex(_ChunkedIndex):
    """Approximate inner-product search: faiss `IndexIVFFlat` (k-means cells, `nprobe` cells searched).

    `nlist` defaults to 4·sqrt(n_keys) cells (at most n_keys/39, the fewest training points per cell faiss
    accepts quietly), trained on at most 64 points per cell drawn with `seed`. Missing neighbours (fewer
    than k keys in the probed cells) come back as index -1.
    """

    def __init__(
        self,
        keys: np.ndarray,
        *,
        nlist: int | None = None,
        nprobe: int = 32,
        device: str = "auto",
        normalize: bool = True,
        seed: int = 0,
    ):
        faiss = _faiss()
        keys = _unit_rows(keys, normalize)
        self.n_keys, self.dim = keys.shape
        if nlist is None:
            nlist = max(1, min(int(4 * math.sqrt(self.n_keys)), self.n_keys // 39))
        nlist = max(1, min(nlist, self.n_keys))
        rng = np.random.default_rng(seed)
        n_train = min(self.n_keys, 64 * nlist)
        train = keys if n_train == self.n_keys else keys[np.sort(rng.choice(self.n_keys, n_train, replace=False))]
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(train)
        index.add(keys)
        index.nprobe = min(nprobe, nlist)
        self.settings = IVFSettings(nlist=nlist, nprobe=index.nprobe, n_train=n_train)
        self.backend, self.device = resolve_backend(device)
        if self.backend == "faiss-gpu":
            self._res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._res, int(self.device.split(":")[1]), index)
        else:
            self.backend, self.device = "faiss-cpu", "cpu"
        self._quantizer = quantizer  # the IVF index refers to it: keep it alive
        self._index = index
        self._keys = keys  # for the exact search of the recall sample

    def _search_chunk(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._index.search(queries, k)

    def recall(
        self, queries: np.ndarray, indices: np.ndarray, *, sample: int = 1000, seed: int = 0, normalize: bool = True
    ) -> tuple[float, int]:
        """`(recall@k, n_sampled)` of `indices` (this index's answer for `queries`) against exact search."""
        n = queries.shape[0]
        rows = np.arange(n) if n <= sample else np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
        exact = FlatIndex(self._keys, device="cpu", normalize=False)
        _, exact_idx = exact.search(queries[rows], indices.shape[1], normalize=normalize)
        return recall_at_k(indices[rows], exact_idx), len(rows)


def ivf_search(
    queries: np.ndarray,
    keys: np.ndarray,
    k: int,
    *,
    nlist: int | None = None,
    nprobe: int = 32,
    recall_sample: int = 1000,
    device: str = "auto",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Approximate top-k with an IVF index: `(scores, indices, recall@k on a sample of queries)`."""
    index = IVFIndex(keys, nlist=nlist, nprobe=nprobe, device=device, seed=seed)
    queries = l2_normalize(queries)
    scores, indices = index.search(queries, k, normalize=False)
    recall, _ = index.recall(queries, indices, sample=recall_sample, seed=seed, normalize=False)
    return scores, indices, recall
