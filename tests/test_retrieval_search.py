"""Exact search (faiss IndexFlatIP) against numpy, chunking, ties, the torch path and the IVF index."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from bioclip_cli.retrieval.search import FlatIndex, IVFIndex, exact_search, ivf_search, l2_normalize, recall_at_k


def _brute_force(queries, keys, k):
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    kk = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    sims = q @ kk.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, 1), order


@pytest.mark.parametrize("chunk_size", [64, 100, 1000])
def test_exact_search_matches_numpy(chunk_size):
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((700, 24)) * rng.uniform(0.5, 3, (700, 1))  # not unit length
    queries = rng.standard_normal((230, 24))  # 230 = chunk boundaries fall mid-array
    scores, indices = exact_search(queries, keys, 5, device="cpu", chunk_size=chunk_size)
    ref_scores, ref_indices = _brute_force(queries, keys, 5)
    assert scores.dtype == np.float32 and indices.dtype == np.int64
    assert scores.shape == indices.shape == (230, 5)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_normalisation_is_in_the_input_precision_then_float32():
    x = np.random.default_rng(1).standard_normal((50, 7))
    expected = (x / np.sqrt((x * x).sum(axis=1))[:, None]).astype(np.float32)
    np.testing.assert_allclose(l2_normalize(x), expected, rtol=0, atol=1e-7)
    assert l2_normalize(x).dtype == np.float32
    assert l2_normalize(np.zeros((1, 3))).tolist() == [[0.0, 0.0, 0.0]]
    # float64 input: divided in float64, then rounded once
    np.testing.assert_array_equal(l2_normalize(x), (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))


def _tied_keys():
    rng = np.random.default_rng(2)
    keys = rng.standard_normal((40, 8)).astype(np.float32)
    keys[[5, 7, 9]] = keys[3]  # four identical keys: 3, 5, 7, 9
    keys[20] = keys[11]
    return keys


def test_ties_come_out_in_faiss_order():
    keys = _tied_keys()
    queries = keys[[3, 11]]
    _, indices = exact_search(queries, keys, 3, device="cpu")
    # faiss keeps the lowest ids among equal scores and lists them by descending id
    assert indices[0].tolist() == [7, 5, 3]
    assert indices[1, :2].tolist() == [20, 11]
    index = faiss.IndexFlatIP(8)
    index.add(l2_normalize(keys))
    np.testing.assert_array_equal(indices, index.search(l2_normalize(queries), 3)[1])


def test_torch_path_returns_the_same_neighbour_lists():
    rng = np.random.default_rng(3)
    keys = np.concatenate([_tied_keys(), rng.standard_normal((300, 8)).astype(np.float32)])
    queries = np.concatenate([keys[[3, 11, 5, 20]], rng.standard_normal((200, 8))])
    for k in (1, 3, 5, 20):
        faiss_scores, faiss_idx = FlatIndex(keys, device="cpu").search(queries, k)
        torch_scores, torch_idx = FlatIndex(keys, device="torch").search(queries, k, chunk_size=70)
        np.testing.assert_array_equal(torch_idx, faiss_idx)
        np.testing.assert_allclose(torch_scores, faiss_scores, atol=1e-6)


def test_torch_path_hands_ties_at_the_kth_place_to_faiss():
    rng = np.random.default_rng(8)
    keys = np.concatenate([np.ones((60, 4)), rng.standard_normal((40, 4))]).astype(np.float32)
    queries = np.concatenate([np.ones((3, 4)), rng.standard_normal((90, 4))])  # 60 tied best keys
    for k in (1, 3, 59, 60, 61):
        expected = FlatIndex(keys, device="cpu").search(queries, k)[1]
        np.testing.assert_array_equal(FlatIndex(keys, device="torch").search(queries, k)[1], expected)


def test_chunked_search_equals_one_call_with_many_threads_and_ties():
    """Small chunks would make faiss split keys over threads and order ties differently: never happens."""
    rng = np.random.default_rng(4)
    keys = rng.integers(-2, 3, (20000, 8)).astype(np.float32)  # integer vectors: many exact ties
    queries = rng.integers(-2, 3, (150, 8)).astype(np.float32)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(16)
    try:
        index = FlatIndex(keys, device="cpu")
        whole = index.search(queries, 7, chunk_size=10**6)
        for chunk_size in (1, 17, 70):
            parts = index.search(queries, 7, chunk_size=chunk_size)
            np.testing.assert_array_equal(parts[1], whole[1])
            np.testing.assert_array_equal(parts[0], whole[0])
    finally:
        faiss.omp_set_num_threads(threads)


def test_progress_is_reported_per_chunk():
    rng = np.random.default_rng(5)
    seen = []
    FlatIndex(rng.standard_normal((50, 4)), device="cpu").search(
        rng.standard_normal((200, 4)), 2, chunk_size=64, progress=seen.append
    )
    assert sum(seen) == 200 and len(seen) == 3  # 64, 64, 72 (a last chunk under 64 joins the one before)


def test_k_larger_than_the_keys_is_refused():
    with pytest.raises(ValueError, match="number of keys"):
        exact_search(np.ones((2, 3)), np.ones((4, 3)), 5)


def test_ivf_with_one_list_is_exact():
    rng = np.random.default_rng(6)
    keys, queries = rng.standard_normal((500, 16)), rng.standard_normal((80, 16))
    scores, indices, recall = ivf_search(queries, keys, 5, nlist=1)
    exact_scores, exact_indices = exact_search(queries, keys, 5, device="cpu")
    np.testing.assert_array_equal(indices, exact_indices)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-6)
    assert recall == 1.0


def test_ivf_recall_is_measured_against_exact_search():
    rng = np.random.default_rng(7)
    keys, queries = rng.standard_normal((4000, 16)), rng.standard_normal((300, 16))
    index = IVFIndex(keys, nlist=64, nprobe=2)
    assert (index.settings.nlist, index.settings.nprobe) == (64, 2)
    _, approx = index.search(queries, 5)
    _, exact = exact_search(queries, keys, 5, device="cpu")
    recall, n = index.recall(queries, approx, sample=1000)
    assert n == 300
    assert recall == pytest.approx(recall_at_k(approx, exact))
    assert 0.05 < recall < 0.99  # random data, 2 of 64 cells: clearly approximate
    sampled, n = index.recall(queries, approx, sample=100, seed=1)
    assert n == 100 and 0 < sampled <= 1


def test_recall_at_k():
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    approx = np.array([[3, 2, 9], [-1, -1, -1]])
    assert recall_at_k(approx, exact) == pytest.approx((2 / 3 + 0) / 2)


def test_a_small_last_chunk_stays_on_faiss_blas_path_so_scores_equal_one_call():
    """faiss scores by BLAS once queries x width reaches its threshold (128,000 on faiss 1.15), by a
    per-pair loop below it: a last chunk of 300 queries of width 256 took the other path, and other
    float32 roundings, than one call over all 16,684 queries."""
    rng = np.random.default_rng(9)
    keys = l2_normalize(rng.standard_normal((1500, 256)))
    queries = l2_normalize(rng.standard_normal((16384 + 300, 256)))
    index = faiss.IndexFlatIP(256)
    index.add(keys)
    ref_scores, ref_ids = index.search(queries, 5)
    scores, ids = FlatIndex(keys, device="cpu", normalize=False).search(queries, 5, normalize=False)
    np.testing.assert_array_equal(scores, ref_scores)
    np.testing.assert_array_equal(ids, ref_ids)
