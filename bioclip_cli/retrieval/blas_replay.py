"""faiss's float32 scores of chosen (query, key) pairs, bit for bit as one `IndexFlatIP.search` over all the
queries computes them.

faiss scores many queries by BLAS GEMMs of blocks of `distance_compute_blas_query_bs` queries (counted from
the first query of the call) by `distance_compute_blas_database_bs` keys (from the first key). OpenBLAS
picks its kernels and thread split by matrix shape, so a pair's float32 score depends on the shape of its
block and on where the pair sits in it, not only on the two vectors: a 64-query call agrees with a
4,096-query call on only a few tens of percent of the scores. The element (i, j) of a GEMM reads only row
i and column j, so placing the query and the key at the same positions of a block of the same shape (the
other rows zero) reproduces the score exactly; one such block replays many pairs at once, as long as no
two of them need different vectors at the same position. docs/lowp_search.md ("Replaying faiss's
blocks") has the argument and the measurements.

Hand-written because faiss offers no way to ask for "the score this pair gets in that call".
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from bioclip_cli.retrieval.search import faiss_blas_threshold

_BELOW_ALL = -3.0e38  # a range-search radius under every finite float32 score


def _faiss():
    import faiss

    return faiss


@contextmanager
def _blas_threshold(value: int):
    """faiss takes its BLAS path for every call (`value` 0) or for none (`value` 2^31 − 1)."""
    cvar = _faiss().cvar
    saved = cvar.distance_compute_blas_threshold
    cvar.distance_compute_blas_threshold = value
    try:
        yield
    finally:
        cvar.distance_compute_blas_threshold = saved


def _blocks(ids: np.ndarray, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(block length, position in block) of each id for blocks of `size` from 0 over `n` rows."""
    start = ids // size * size
    return np.minimum(size, n - start), ids - start


def replay_scores(queries: np.ndarray, keys: np.ndarray, q_ids: np.ndarray, k_ids: np.ndarray) -> np.ndarray:
    """float32 scores of the pairs `(queries[q_ids[m]], keys[k_ids[m]])` exactly as
    `IndexFlatIP(keys).search(queries, k)` computes them.

    faiss takes its BLAS path when `len(queries) * dim` reaches `distance_compute_blas_threshold` (measured on
    faiss 1.15: 128,000), else it scores each pair by its SIMD `fvec_inner_product`, whatever the shape.
    """
    if len(queries) * queries.shape[1] < faiss_blas_threshold():
        return _pair_scores(queries, keys, q_ids, k_ids)
    return _block_scores(queries, keys, q_ids, k_ids)


def _pair_scores(queries, keys, q_ids, k_ids, step: int = 256) -> np.ndarray:
    """The pairs' scores by faiss's per-pair path (its scores do not depend on the call's shape)."""
    faiss = _faiss()
    out = np.empty(len(q_ids), dtype=np.float32)
    with _blas_threshold(2**31 - 1):
        for s in range(0, len(q_ids), step):
            uq, qi = np.unique(q_ids[s : s + step], return_inverse=True)
            uk, ki = np.unique(k_ids[s : s + step], return_inverse=True)
            scores, ids = faiss.knn(queries[uq], keys[uk], len(uk), metric=faiss.METRIC_INNER_PRODUCT)
            block = np.empty_like(scores)
            np.put_along_axis(block, ids, scores, 1)
            out[s : s + step] = block[qi, ki]
    return out


def _block_scores(queries, keys, q_ids, k_ids) -> np.ndarray:
    """The pairs' scores by synthetic blocks of the reference's BLAS blocks' shapes and positions."""
    faiss = _faiss()
    cvar = faiss.cvar
    q_len, q_pos = _blocks(q_ids, len(queries), int(cvar.distance_compute_blas_query_bs))
    k_len, k_pos = _blocks(k_ids, len(keys), int(cvar.distance_compute_blas_database_bs))
    out = np.empty(len(q_ids), dtype=np.float32)
    layers: list[tuple[tuple[int, int], dict, dict, list]] = []
    for m in range(len(q_ids)):
        shape = (int(q_len[m]), int(k_len[m]))
        qp, kp, qi, ki = int(q_pos[m]), int(k_pos[m]), int(q_ids[m]), int(k_ids[m])
        for lay_shape, q_at, k_at, members in layers:
            if lay_shape == shape and q_at.get(qp, qi) == qi and k_at.get(kp, ki) == ki:
                break
        else:
            q_at, k_at, members = {}, {}, []
            layers.append((shape, q_at, k_at, members))
        q_at[qp], k_at[kp] = qi, ki
        members.append(m)
    dim = queries.shape[1]
    with _blas_threshold(0):
        for (nq, nk), q_at, k_at, members in layers:
            q_block = np.zeros((nq, dim), dtype=np.float32)
            k_block = np.zeros((nk, dim), dtype=np.float32)
            q_block[list(q_at)] = queries[list(q_at.values())]
            k_block[list(k_at)] = keys[list(k_at.values())]
            index = faiss.IndexFlatIP(dim)
            index.add(k_block)
            # a range search below every score returns the whole block, without a top-k selection
            lims, scores, ids = index.range_search(q_block, _BELOW_ALL)
            block = np.empty((nq, nk), dtype=np.float32)
            block[np.repeat(np.arange(nq), np.diff(lims).astype(np.int64)), ids] = scores
            out[members] = block[q_pos[members], k_pos[members]]
    return out
