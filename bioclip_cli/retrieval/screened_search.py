"""Exact top-k inner-product search at bf16 speed: screen every key in bf16, rescore the survivors with faiss.

The lists (ids and their order, ties included) are those of one faiss `IndexFlatIP.search` over all the
queries; the scores are faiss's float32 scores (the reference's bit for bit where a near tie was replayed,
else within a few ulps of them); only the work changes. docs/lowp_search.md derives the bound and argues why the lists are identical; in short:

1. Round queries and keys to bfloat16 and keep, per vector, the float64 norm of its rounding error
   `‖x − x̃‖` (measured, so the bound holds whatever the rounding mode).
2. Coarse scores `c = fl_bf16(x̃_k · x̃_q)` by a bf16 matmul (AVX-512 BF16 / AMX on a CPU, tensor cores on a
   GPU): products of bf16 numbers are exact in float32, the sum is accumulated in float32 (error at most
   `γ_d‖q̃‖‖k̃‖`), and the result is rounded once to bf16 (relative error at most 2^-8), so
   `|c − q·k| ≤ r|c| + E` with `r = 2^-8/(1 − 2^-8)` and `E = ‖δq‖‖k‖ + ‖q̃‖‖δk‖ + γ_d‖q̃‖‖k̃‖`;
   faiss's own float32 score is within `η = γ_d‖q‖‖k‖` of `q·k`.
3. A key can be in faiss's top-k only if `c + r|c| ≥ c_k − r|c_k| − 2(E + η)`, `c_k` the k-th largest
   coarse score. `c_k` is bounded from below by the k-th largest maximum over groups of 16 keys (a cheap
   elementwise max over the rows of the [keys, queries] score block); a lower bound only keeps more keys.
4. For each group of queries faiss searches the union of their surviving keys (ids ascending). Keys that
   cannot reach the k-th score never change which tied keys faiss keeps.
5. faiss's float32 score of a pair depends on the shape of the BLAS block it is computed in, so near-tied
   keys can swap between the rescoring call and the reference (one `IndexFlatIP.search` over all the
   queries). Every query whose top-k window holds more than k keys, or keys whose possible reference scores
   (within `γ_d Σ|qᵢkᵢ|` of the float64 score) overlap, is replayed: its window keys are scored in the
   reference's blocks (:mod:`~bioclip_cli.retrieval.blas_replay`) and kept as faiss's heap keeps them.

When the survivors of a group of queries exceed `max_candidate_share` of the keys (the bound cannot
screen them: e.g. a query among thousands of near-duplicates) that group is searched by faiss over all
keys (near ties replayed as above). Tiny key sets (under :data:`MIN_KEYS`), query sets (under
:data:`RESCORE_QUERIES`) and k from faiss's reservoir threshold on go to faiss directly, over all queries in
FlatIndex's chunks.

Hand-written because no maintained library screens with a proven bound and returns faiss's exact lists:
faiss's scalar quantizers and its GPU float16 search are approximate. An int8 screen (VNNI, one scale per
vector) was measured too: its matmul is faster, but its proven bound is ~8x looser and keeps ~20% of the
keys, so it loses overall (docs/lowp_search.md, "Why bf16").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bioclip_cli.retrieval.blas_replay import replay_scores
from bioclip_cli.retrieval.search import (
    DEFAULT_CHUNK,
    FlatIndex,
    _check_k,
    _min_chunk,
    _unit_rows,
    faiss_chunks,
    resolve_backend,
)

SEARCHES = ("screened", "exact")  # `eval.search`, `--search`

GROUP = 16  # keys per group maximum (the cheap lower bound of the k-th coarse score)
KEY_BLOCK = 32768  # keys per bf16 matmul (a multiple of GROUP): [KEY_BLOCK, query block] bf16 scores
QUERY_BLOCK = 512  # queries per coarse pass
RESCORE_QUERIES = 64  # queries whose surviving keys faiss rescores in one call (see _rescore)
MIN_KEYS = 4096  # below this many keys the screen does not pay: faiss over all keys
_U32 = 2.0**-24  # float32 unit roundoff
_U16 = 2.0**-8  # bfloat16 unit roundoff
_TINY = 1e-30  # float32 flush-to-zero of d products of bf16 numbers: d * 2^-126 < 1e-34, rounded up


def _faiss():
    import faiss

    return faiss


@dataclass
class ScreenStats:
    """What the last search did: queries, (query, key) pairs rescored, query groups, fallbacks, unions."""

    queries: int = 0
    rescored_pairs: int = 0
    groups: int = 0
    fallback_groups: int = 0
    replayed_queries: int = 0
    union_sizes: list[int] = field(default_factory=list)

    @property
    def mean_candidates(self) -> float:
        return self.rescored_pairs / max(self.queries, 1)


@dataclass(frozen=True)
class Rounded:
    """bf16 rows (torch) and upper bounds (float64) of the norms the bound needs: ‖x‖, ‖x̃‖ and ‖x − x̃‖."""

    rows: object  # torch.bfloat16 [n, d]
    norms: np.ndarray
    r_norms: np.ndarray
    err_norms: np.ndarray


def _norm_upper(x: np.ndarray) -> np.ndarray:
    """float64 upper bounds of the row norms of float32 `x`: a float32 sum of d squares is within a relative
    γ_d of the exact one (all terms are positive), and the square root adds one more rounding."""
    d = x.shape[1]
    gamma = d * _U32 / (1 - d * _U32)
    squares = np.einsum("ij,ij->i", x, x).astype(np.float64)
    return np.sqrt(squares / (1 - gamma)) * (1 + 2 * _U32)


def round_bf16(x: np.ndarray, block: int = 65536) -> Rounded:
    """float32 rows rounded to bfloat16 (torch's conversion), with upper bounds of their norms and of their
    measured rounding-error norms."""
    import torch

    n = x.shape[0]
    rows = torch.empty(x.shape, dtype=torch.bfloat16)
    norms, r_norms, err_norms = (np.empty(n, dtype=np.float64) for _ in range(3))
    for s in range(0, n, block):
        exact = torch.from_numpy(np.ascontiguousarray(x[s : s + block], dtype=np.float32))
        rounded = exact.bfloat16()
        rows[s : s + block] = rounded
        wide = rounded.float()  # exact; so is exact - wide (the bits that rounding dropped)
        for out, v in ((norms, exact), (r_norms, wide), (err_norms, exact - wide)):
            out[s : s + block] = _norm_upper(v.numpy())
    return Rounded(rows, norms, r_norms, err_norms)


def coarse_slack(query: Rounded, keys: Rounded, dim: int) -> np.ndarray:
    """Per query, `2(E + η)` (docs/lowp_search.md, "The bound"): the additive part of how far below the
    k-th coarse score a key's coarse score may be and still reach faiss's top-k.

    The result is inflated by a relative 1e-9 to cover the rounding of this float64 arithmetic.
    """
    gamma = dim * _U32 / (1 - dim * _U32)
    k_norm, k_rnorm, k_err = (v.max(initial=0.0) for v in (keys.norms, keys.r_norms, keys.err_norms))
    e = query.err_norms * k_norm + query.r_norms * k_err + gamma * query.r_norms * k_rnorm + _TINY
    eta = gamma * query.norms * k_norm
    return 2 * (e + eta) * (1 + 1e-9)


def screen_threshold(kth: np.ndarray, slack: np.ndarray) -> np.ndarray:
    """The lowest coarse score (float64) a key may have and still reach the top-k: the `x` solving
    `x + r|x| = c_k − r|c_k| − slack` (`r = 2^-8/(1 − 2^-8)`), made a little lower for float64 rounding."""
    r = _U16 / (1 - _U16)
    low = kth - r * np.abs(kth) - slack
    x = np.where(low >= 0, low / (1 + r), low / (1 - r))
    return x - 1e-12 * (1 + np.abs(x))


def _bf16_at_most(x: np.ndarray):
    """bf16 tensor of the largest bf16 values not above `x` (float64; -inf stays -inf)."""
    import torch

    x64 = torch.from_numpy(x)
    b = x64.bfloat16()
    over = b.double() > x64
    b[over] = torch.nextafter(b[over], torch.full_like(b[over], -float("inf")))
    return b


class ScreenedIndex:
    """Exact inner-product search (faiss `IndexFlatIP`'s lists and scores) with a bf16 screen.

    `keys` are L2-normalised here unless `normalize=False` (then searched as given, unit or not: the bound
    uses the actual norms). `search` has :class:`~bioclip_cli.retrieval.search.FlatIndex`'s signature;
    :attr:`stats` describes the last call. `device` is where the bf16 screen runs (a torch device).
    """

    backend = "faiss-cpu"  # the scores and lists are faiss CPU's; :attr:`method` says how they were found
    method = "screened (bf16 screen, faiss rescoring)"

    def __init__(
        self, keys: np.ndarray, *, normalize: bool = True, device: str = "cpu", max_candidate_share: float = 0.25
    ):
        keys = _unit_rows(keys, normalize)
        if keys.ndim != 2:
            raise ValueError(f"keys must be a 2-D array, got shape {keys.shape}")
        self.n_keys, self.dim = keys.shape
        self.device = device
        self.max_candidate_share = max_candidate_share
        self._keys = keys
        self._faiss_index = None
        self.stats = ScreenStats()
        self._rounded = None  # bf16 keys, rounded at the first search that screens (few queries never do)

    def _screen_keys(self) -> Rounded:
        if self._rounded is None:
            import torch

            self._rounded = round_bf16(self._keys)
            n_pad = -self.n_keys % GROUP
            rows = self._rounded.rows
            if n_pad:  # padding keys score 0; they are masked to -inf before any use
                rows = torch.cat([rows, torch.zeros((n_pad, self.dim), dtype=torch.bfloat16)])
            self._key_rows = rows.to(self.device)
        return self._rounded

    # ------------------------------------------------------------------------------------- search
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        chunk_size: int = QUERY_BLOCK,
        normalize: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`(scores float32 [Q, k], indices int64 [Q, k])`, best first, identical to `IndexFlatIP.search`."""
        queries = _unit_rows(queries, normalize)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries of shape {queries.shape} do not match keys of width {self.dim}")
        _check_k(k, self.n_keys)
        n = queries.shape[0]
        self.stats = ScreenStats(queries=n)
        scores = np.empty((n, k), dtype=np.float32)
        indices = np.empty((n, k), dtype=np.int64)
        direct = self.n_keys < MIN_KEYS or k * GROUP > self.n_keys // 4 or n < RESCORE_QUERIES
        direct = direct or k >= _faiss().cvar.distance_compute_min_k_reservoir  # its tie rule: not replayed
        if direct:  # faiss over all queries, in FlatIndex's chunks: its blocks are those of one call
            for s, e in faiss_chunks(n, DEFAULT_CHUNK, self.dim):
                scores[s:e], indices[s:e] = self._full_search(queries[s:e], k)
                if progress is not None:
                    progress(e - s)
            return scores, indices
        block = max(chunk_size, RESCORE_QUERIES, _min_chunk(n, self.dim))
        bounds = [(s, min(n, s + block)) for s in range(0, n, block)]
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < RESCORE_QUERIES:
            bounds[-2:] = [(bounds[-2][0], n)]
        rounded = round_bf16(queries)
        slack = coarse_slack(rounded, self._screen_keys(), self.dim)
        tied_rows, tied_cols = [], []
        for s, e in bounds:
            rows, cols = self._screen(rounded.rows[s:e], slack[s:e], k)
            self._rescore(queries[s:e], rows, cols, k, scores[s:e], indices[s:e])
            t_rows, t_cols = near_tie_windows(queries[s:e], self._keys, rows, cols, k)
            tied_rows.append(t_rows + s)
            tied_cols.append(t_cols)
            if progress is not None:
                progress(e - s)
        self._replay(queries, np.concatenate(tied_rows), np.concatenate(tied_cols), k, scores, indices)
        return scores, indices

    def _replay(self, queries, rows, cols, k, scores_out, indices_out) -> None:
        """The near-tied queries' lists from their window keys' scores in the reference call (faiss over all
        `queries` at once), kept as faiss's heap keeps them (:func:`heap_survivors`) and listed by score,
        then id descending (faiss's order)."""
        if rows.size == 0:
            return
        replayed = replay_scores(queries, self._keys, rows, cols)
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        self.stats.replayed_queries += len(starts)
        for a, b in zip(starts, [*starts[1:], len(rows)], strict=True):
            f, ids = replayed[a:b], cols[a:b]
            kept = heap_survivors(f, k)
            f, ids = f[kept], ids[kept]
            order = np.lexsort((-ids, -f))
            scores_out[rows[a]], indices_out[rows[a]] = f[order], ids[order]

    def _screen(self, queries, slack: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(query row, key id) pairs that may reach each query's top-k, sorted by row, then id."""
        import torch

        q = queries.to(self.device)
        cuda = torch.device(self.device).type == "cuda"
        reduced = cuda and torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
        if reduced:  # the bound needs float32 accumulation: no bf16 partial sums (split-K) in cuBLAS
            torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
        try:
            return self._screen_blocks(q, slack, k)
        finally:
            if reduced:
                torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True

    def _screen_blocks(self, q, slack: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        nq = q.shape[0]
        best = torch.full((k, nq), -float("inf"), dtype=torch.bfloat16, device=self.device)  # running top-k
        found: list[tuple] = []
        n_total = self._key_rows.shape[0]
        with torch.inference_mode():
            for s in range(0, n_total, KEY_BLOCK):
                e = min(n_total, s + KEY_BLOCK)
                coarse = self._key_rows[s:e] @ q.T  # [keys, queries] bf16
                if e > self.n_keys:
                    coarse[self.n_keys - s :] = -float("inf")
                grouped = coarse.view(-1, GROUP, nq)
                maxima = grouped.amax(dim=1)  # [groups, queries]
                top = torch.topk(maxima, min(k, maxima.shape[0]), dim=0).values
                best = torch.topk(torch.cat([best, top]), k, dim=0).values
                thr = self._threshold(best[k - 1], slack)
                g, qi = torch.nonzero(maxima >= thr, as_tuple=True)
                vals = grouped[g, :, qi]  # [m, GROUP]
                m, j = torch.nonzero(vals >= thr[qi, None], as_tuple=True)
                found.append((qi[m], s + g[m] * GROUP + j, vals[m, j]))
            thr = self._threshold(best[k - 1], slack)
            rows = torch.cat([f[0] for f in found])
            cols = torch.cat([f[1] for f in found])
            keep = torch.cat([f[2] for f in found]) >= thr[rows]
        rows, cols = rows[keep].cpu().numpy(), cols[keep].cpu().numpy()
        order = np.lexsort((cols, rows))
        return rows[order], cols[order]

    def _threshold(self, kth, slack: np.ndarray):
        """Per query, the bf16 coarse score a key needs to stay a candidate (rounded down)."""
        thr = screen_threshold(kth.double().cpu().numpy(), slack)
        return _bf16_at_most(thr).to(self.device)

    def _rescore(self, queries, rows, cols, k, scores_out, indices_out) -> None:
        """faiss over the union of the surviving keys of each RESCORE_QUERIES queries (the last group
        takes the remainder, so that every faiss call has at least RESCORE_QUERIES queries)."""
        n = queries.shape[0]
        starts = list(range(0, n, RESCORE_QUERIES))
        if len(starts) > 1 and n - starts[-1] < RESCORE_QUERIES:
            starts.pop()
        faiss = _faiss()
        for s, e in zip(starts, [*starts[1:], n], strict=True):
            lo, hi = np.searchsorted(rows, s), np.searchsorted(rows, e)
            union = np.unique(cols[lo:hi])
            self.stats.groups += 1
            self.stats.rescored_pairs += int(hi - lo)
            self.stats.union_sizes.append(len(union))
            if len(union) > self.max_candidate_share * self.n_keys:
                self.stats.fallback_groups += 1
                scores_out[s:e], indices_out[s:e] = self._full_search(queries[s:e], k)
                continue
            d, i = faiss.knn(queries[s:e], self._keys[union], k, metric=faiss.METRIC_INNER_PRODUCT)
            scores_out[s:e], indices_out[s:e] = d, union[i]

    def _full_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._faiss_index is None:
            self._faiss_index = _faiss().IndexFlatIP(self.dim)
            self._faiss_index.add(self._keys)
        return self._faiss_index.search(queries, k)


def heap_survivors(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k keys faiss's top-k heap keeps, `scores` in ascending key-id order (those of at
    least the k-th largest score suffice: lower ones never change which of them are kept).

    faiss scans keys by ascending id and inserts a key only if its score beats the heap's worst strictly;
    among equal scores the heap's worst is the lowest id. So with `v` the k-th largest score, every key
    above `v` enters; a key at `v` enters only while fewer than k keys at or above `v` are in the heap, and
    each later key above `v` that finds the heap full evicts the lowest-id key at `v`.
    """
    v = np.partition(scores, len(scores) - k)[len(scores) - k]
    heap: list[int] = []
    ties: list[int] = []  # heap members at v, ascending id
    for pos in np.flatnonzero(scores >= v):
        if len(heap) < k:
            heap.append(pos)
            if scores[pos] == v:
                ties.append(pos)
        elif scores[pos] > v:
            heap.remove(ties.pop(0))
            heap.append(pos)
    return np.array(heap, dtype=np.int64)


def _exact_scores(queries, keys, rows, cols, group: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """float64 `q·k` and `Σ|qᵢkᵢ|` of the pairs (queries[rows], keys[cols]); `rows` sorted.

    Per `group` consecutive queries, one float64 matmul against the union of their keys (products of
    float32 numbers are exact in float64; the sums are within a relative ~1e-13, far inside the 1e-6
    inflation of the near-tie bound) instead of gathering one key row per pair.
    """
    dots, absums = np.empty(len(rows)), np.empty(len(rows))
    bounds = np.searchsorted(rows, np.arange(0, queries.shape[0] + group, group))
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if lo == hi:
            continue
        r, c = rows[lo:hi], cols[lo:hi]
        uq, qi = np.unique(r, return_inverse=True)
        uk, ki = np.unique(c, return_inverse=True)
        q = queries[uq].astype(np.float64)
        x = keys[uk].astype(np.float64)
        dots[lo:hi] = (q @ x.T)[qi, ki]
        absums[lo:hi] = (np.abs(q) @ np.abs(x).T)[qi, ki]
    return dots, absums


def near_tie_windows(queries, keys, rows, cols, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The candidates (rows, cols; sorted by row) whose order in faiss's reference call the rescoring call
    cannot vouch for (docs/lowp_search.md, "Near ties"): for each query whose top-k window holds more than
    k keys or two keys whose possible reference scores overlap, every key of that window.

    Any float32 score faiss computes for a pair, in any call, lies within `β = γ_d Σ|qᵢkᵢ|` of the exact
    `q·k` (computed here in float64; `β` inflated by a relative 1e-6 for that arithmetic). With `T` the
    k-th largest `q·k − β`, the window is the keys with `q·k + β ≥ T`: it holds the reference's top-k.
    `rows` must give every query at least k candidates (the screen does).
    """
    d = queries.shape[1]
    gamma = d * _U32 / (1 - d * _U32)
    exact, absum = _exact_scores(queries, keys, rows, cols)
    beta = gamma * absum * (1 + 1e-6) + _TINY
    lo, hi = exact - beta, exact + beta
    n = queries.shape[0]
    starts = np.searchsorted(rows, np.arange(n))
    kth_lo = lo[np.lexsort((-lo, rows))[starts + k - 1]]
    window = np.flatnonzero(hi >= kth_lo[rows])
    window = window[np.lexsort((lo[window], rows[window]))]  # by row, then lo ascending
    w_rows = rows[window]
    overlap = (w_rows[1:] == w_rows[:-1]) & (hi[window[:-1]] >= lo[window[1:]])
    tied = np.zeros(n, dtype=bool)
    tied[w_rows[:-1][overlap]] = True
    tied[np.bincount(w_rows, minlength=n) > k] = True
    keep = window[tied[w_rows]]
    keep.sort()  # rows, then key ids ascending
    return rows[keep], cols[keep]


def exact_index(keys: np.ndarray, *, search: str = "screened", device: str = "auto", normalize: bool = True):
    """The exact index for `search` (`eval.search`): :class:`ScreenedIndex` where faiss runs on the CPU and
    `search="screened"`, else :class:`~bioclip_cli.retrieval.search.FlatIndex` (plain float32; on a GPU
    faiss-gpu or torch, whose float32 GEMM is already fast)."""
    if search not in SEARCHES:
        raise ValueError(f"unknown search {search!r}: use one of {', '.join(SEARCHES)}")
    if search == "screened" and resolve_backend(device)[0] == "faiss-cpu":
        return ScreenedIndex(keys, normalize=normalize)
    return FlatIndex(keys, device=device, normalize=normalize)
