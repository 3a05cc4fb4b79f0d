"""Replaying faiss's float32 scores of chosen pairs as one IndexFlatIP.search over all queries computes them,
and the keys faiss's top-k heap keeps among equal scores."""

from __future__ import annotations

import faiss
import numpy as np

from bioclip_cli.retrieval.blas_replay import replay_scores
from bioclip_cli.retrieval.screened_search import heap_survivors


def _all_scores(queries, keys):
    """Every score of one faiss search over all queries (k = all keys), by key id."""
    d, i = faiss.knn(queries, keys, keys.shape[0], metric=faiss.METRIC_INNER_PRODUCT)
    out = np.empty_like(d)
    np.put_along_axis(out, i, d, 1)
    return out


def test_replayed_scores_are_the_reference_calls_bit_for_bit_and_a_smaller_call_is_not():
    rng = np.random.default_rng(0)
    for n_queries, dim in ((4500, 64), (300, 64)):  # BLAS path (two query blocks, the last partial); per pair
        queries = rng.standard_normal((n_queries, dim)).astype(np.float32)
        keys = rng.standard_normal((2500, dim)).astype(np.float32)  # key blocks 1,024 + 1,024 + 452
        ref = _all_scores(queries, keys)
        q_ids = rng.integers(0, n_queries, 3000)
        k_ids = rng.integers(0, 2500, 3000)
        np.testing.assert_array_equal(replay_scores(queries, keys, q_ids, k_ids), ref[q_ids, k_ids])
    queries = rng.standard_normal((4500, 256)).astype(np.float32)
    ref = _all_scores(queries[:4096], keys := rng.standard_normal((2048, 256)).astype(np.float32))
    assert (_all_scores(queries[:64], keys) != ref[:64]).mean() > 0.2  # why a replay is needed at all


def test_heap_survivors_are_the_keys_faiss_keeps_among_equal_scores():
    rng = np.random.default_rng(1)
    query = np.ones((64, 1), dtype=np.float32)  # many queries: faiss scans keys in id order
    for _ in range(300):
        scores = rng.integers(0, 4, 12).astype(np.float32)
        k = int(rng.integers(1, 6))
        index = faiss.IndexFlatIP(1)
        index.add(scores[:, None])
        _, ids = index.search(query, k)
        assert sorted(heap_survivors(scores, k).tolist()) == sorted(ids[0].tolist()), (scores, k)
