"""The bf16-screened exact search against faiss IndexFlatIP: the bound itself, ties, near-ties below bf16
resolution, vectors built to defeat a loose bound, non-unit input, large k, tiny key sets, the fallback."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from bioclip_cli.retrieval.screened_search import ScreenedIndex, coarse_slack, round_bf16
from bioclip_cli.retrieval.search import FlatIndex, l2_normalize


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _faiss(queries, keys, k):
    index = faiss.IndexFlatIP(keys.shape[1])
    index.add(keys)
    return index.search(queries, k)


def _adversarial_keys(query: np.ndarray, n: int, rng) -> np.ndarray:
    """Keys whose every element sits just beside a bf16 rounding midpoint, on the side that rounding
    moves against the query: bf16 scores them up to the bound's worth too low."""
    keys = _unit(rng, n, query.size) * 0.7 + query * 0.3
    bits = torch.from_numpy(keys).view(torch.int32)
    # set the dropped 16 bits to just below half an ulp (rounds down in magnitude) or just above (up)
    down = torch.from_numpy(np.sign(keys) == np.sign(query)[None, :])
    low = torch.where(down, torch.tensor(0x7FFF, dtype=torch.int32), torch.tensor(0x8001, dtype=torch.int32))
    keys = ((bits & ~0xFFFF) | low).view(torch.float32).numpy()
    return keys / np.linalg.norm(keys, axis=1, keepdims=True).astype(np.float32)


def test_the_coarse_bound_holds_for_every_pair_even_adversarial_ones():
    rng = np.random.default_rng(0)
    q = _unit(rng, 64, 96)
    keys = np.concatenate([_unit(rng, 400, 96), _adversarial_keys(q[0], 400, rng)])
    kq, kk = round_bf16(q), round_bf16(keys)
    coarse = (kk.rows @ kq.rows.T).T.double().numpy()  # the screen's arithmetic: bf16 matmul, bf16 out
    exact = q.astype(np.float64) @ keys.astype(np.float64).T
    slack = coarse_slack(kq, kk, 96) / 2  # E + eta, one side
    r = 2.0**-8 / (1 - 2.0**-8)
    err = np.abs(coarse - exact)
    assert (err <= r * np.abs(coarse) + slack[:, None]).all()
    # the bound is not loose by orders of magnitude: the adversarial keys use a good share of it
    assert (err[0, 400:] / (r * np.abs(coarse[0, 400:]) + slack[0])).max() > 0.2
    # and a bound that only covers the bf16 rounding of the result is broken by them
    assert (err[0, 400:] > r * np.abs(coarse[0, 400:])).any()


def test_random_keys_give_faiss_lists_and_scores():
    rng = np.random.default_rng(1)
    keys, queries = _unit(rng, 40000, 48), _unit(rng, 600, 48)
    index = ScreenedIndex(keys, normalize=False)
    for k in (1, 5, 20):
        scores, indices = index.search(queries, k, normalize=False)
        ref_scores, ref_indices = _faiss(queries, keys, k)
        np.testing.assert_array_equal(indices, ref_indices)
        np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=2e-7)
        assert index.stats.fallback_groups == 0
        assert index.stats.mean_candidates < 20 * k  # it screened: far fewer than 40000 keys per query


def test_exact_ties_and_duplicated_keys_come_out_in_faiss_order():
    """Integer vectors: every score is exact in any arithmetic, so many keys tie exactly."""
    rng = np.random.default_rng(2)
    keys = rng.integers(-2, 3, (8192, 16)).astype(np.float32)
    keys[4000:4500] = keys[:500]  # duplicated keys far apart
    queries = np.concatenate([keys[:100], rng.integers(-2, 3, (200, 16))]).astype(np.float32)
    index = ScreenedIndex(keys, normalize=False)
    for k in (1, 3, 7):
        scores, indices = index.search(queries, k, normalize=False)
        ref_scores, ref_indices = _faiss(queries, keys, k)
        np.testing.assert_array_equal(indices, ref_indices)
        np.testing.assert_array_equal(scores, ref_scores)


def test_keys_that_differ_below_bf16_resolution_are_ordered_by_their_float32_scores():
    rng = np.random.default_rng(3)
    queries = _unit(rng, 128, 32)
    base = _unit(rng, 6000, 32)
    near = queries * np.float32(0.9) + base[:128] * np.float32(0.1)
    twins = np.concatenate([near, near * np.float32(1 + 2**-12), near * np.float32(1 - 2**-13)])  # same bf16
    keys = np.concatenate([base, twins]).astype(np.float32)
    index = ScreenedIndex(keys, normalize=False)
    scores, indices = index.search(queries, 3, normalize=False)
    np.testing.assert_array_equal(indices, _faiss(queries, keys, 3)[1])
    assert (np.diff(scores, axis=1) < 0).all()  # three distinct float32 scores the bf16 screen cannot tell apart


def test_vectors_built_to_defeat_a_loose_bound_get_faiss_lists():
    rng = np.random.default_rng(4)
    queries = _unit(rng, 64, 64)
    # per query: a fair key, and an adversarial key a hair better in float32 that bf16 scores lower
    keys = [_unit(rng, 5000, 64)]
    for q in queries:
        adv = _adversarial_keys(q, 1, rng)[0]
        fair = adv + (rng.standard_normal(64).astype(np.float32) * 1e-3)
        fair = fair / np.linalg.norm(fair)
        keys += [adv[None], fair[None]] if adv @ q > fair @ q else [fair[None], adv[None]]
    keys = np.concatenate(keys).astype(np.float32)
    expected = _faiss(queries, keys, 1)[1]
    got = ScreenedIndex(keys, normalize=False).search(queries, 1, normalize=False)[1]
    np.testing.assert_array_equal(got, expected)


def test_non_unit_input_is_normalised_like_flat_index_or_searched_as_given():
    rng = np.random.default_rng(5)
    keys = rng.standard_normal((5000, 24)) * rng.uniform(0.1, 10, (5000, 1))
    queries = rng.standard_normal((150, 24)) * 7
    _, expected = FlatIndex(keys, device="cpu").search(queries, 5)
    np.testing.assert_array_equal(ScreenedIndex(keys).search(queries, 5)[1], expected)
    raw_k, raw_q = keys.astype(np.float32), queries.astype(np.float32)  # inner product on raw vectors
    got = ScreenedIndex(raw_k, normalize=False).search(raw_q, 5, normalize=False)[1]
    np.testing.assert_array_equal(got, _faiss(raw_q, raw_k, 5)[1])


@pytest.mark.parametrize(("n_keys", "n_queries", "k"), [(10, 70, 10), (5000, 70, 400), (5000, 20, 5), (4100, 300, 3)])
def test_tiny_key_sets_large_k_and_few_queries(n_keys, n_queries, k):
    rng = np.random.default_rng(6)
    keys, queries = _unit(rng, n_keys, 16), _unit(rng, n_queries, 16)
    got = ScreenedIndex(keys, normalize=False).search(queries, k, normalize=False)[1]
    np.testing.assert_array_equal(got, _faiss(queries, keys, k)[1])


def test_too_many_candidates_fall_back_to_faiss_over_all_keys():
    rng = np.random.default_rng(7)
    keys = np.concatenate([np.tile(_unit(rng, 1, 16), (3000, 1)), _unit(rng, 3000, 16)])  # near-duplicates
    keys = keys + rng.standard_normal(keys.shape).astype(np.float32) * 1e-4
    queries = np.concatenate([keys[:80], _unit(rng, 200, 16)])
    index = ScreenedIndex(keys, max_candidate_share=0.1)
    scores, indices = index.search(queries, 5)
    ref_scores, ref_indices = FlatIndex(keys, device="cpu").search(queries, 5)
    np.testing.assert_array_equal(indices, ref_indices)
    assert index.stats.fallback_groups >= 1


def test_zero_vectors_and_progress():
    rng = np.random.default_rng(8)
    keys = _unit(rng, 5000, 16)
    keys[10] = 0
    queries = _unit(rng, 300, 16)
    queries[0] = 0
    seen = []
    index = ScreenedIndex(keys, normalize=False)
    _, indices = index.search(queries, 4, normalize=False, progress=seen.append, chunk_size=100)
    np.testing.assert_array_equal(indices, _faiss(queries, keys, 4)[1])
    assert sum(seen) == 300


def test_normalisation_matches_l2_normalize():
    x = np.random.default_rng(9).standard_normal((4200, 8))
    index = ScreenedIndex(x)
    np.testing.assert_array_equal(index._keys, l2_normalize(x))


def test_evaluation_screened_equals_exact_and_is_recorded():
    from bioclip_cli.retrieval.evaluation import evaluate_arrays

    rng = np.random.default_rng(10)
    species = rng.integers(0, 40, 4600)
    labels = {lv: [f"{lv[0]}{s // div}" for s in species] for lv, div in
              (("order", 20), ("family", 10), ("genus", 4), ("species", 1))}  # fmt: skip
    centers = _unit(rng, 40, 32)
    feats = centers[species] + 0.6 * _unit(rng, 4600, 32)
    q_rows, k_rows = slice(0, 300), slice(300, None)
    args = (
        {"seen": {"image": feats[q_rows], "dna": feats[q_rows]}}, {"image": feats[k_rows], "dna": feats[k_rows]},
        {"seen": {lv: v[:300] for lv, v in labels.items()}}, {lv: v[300:] for lv, v in labels.items()},
    )  # fmt: skip
    screened = evaluate_arrays(*args, queries=["image"], keys=["image"], device="cpu").to_json()
    exact = evaluate_arrays(*args, queries=["image"], keys=["image"], device="cpu", search="exact").to_json()
    assert screened["results"] == exact["results"]
    assert screened["inputs"]["search"] == "screened" and exact["inputs"]["search"] == "exact"
    assert screened["inputs"]["backend"] == "faiss-cpu (cpu)"


def _near_tied_keys(queries: np.ndarray, n_random: int, rng) -> np.ndarray:
    """Random keys plus, for each of `queries`, two keys near it whose exact scores differ by far less than a
    float32 ulp: which of the two faiss ranks first depends on how its BLAS call sums the products."""
    n, d = queries.shape
    a = queries * 0.8 + _unit(rng, n, d) * 0.6
    b = a + rng.standard_normal((n, d)).astype(np.float32) * 2e-7  # a few ulps of each element
    pairs = np.empty((2 * n, d), dtype=np.float32)
    pairs[0::2], pairs[1::2] = a, b
    keys = np.concatenate([_unit(rng, n_random, d), pairs])
    return keys[rng.permutation(len(keys))]


def test_near_ties_come_out_in_the_order_of_faiss_over_all_queries_at_once():
    """The rescoring calls faiss on other shapes than the reference call (one search over all queries), so
    near-tied keys got float32 scores a few ulps apart from the reference's and could swap; the near-tied
    queries are now replayed in the reference's BLAS blocks."""
    rng = np.random.default_rng(5)
    queries = _unit(rng, 4500, 256)  # two faiss query blocks (4,096 + 404)
    keys = _near_tied_keys(queries[::5], 6000, rng)  # 7,800 keys: 8 key blocks, the last one partial
    ref_scores, ref_indices = FlatIndex(keys, device="cpu", normalize=False).search(queries, 5, normalize=False)
    index = ScreenedIndex(keys, normalize=False)
    scores, indices = index.search(queries, 5, normalize=False)
    np.testing.assert_array_equal(indices, ref_indices)
    assert index.stats.replayed_queries > 0
    assert index.stats.fallback_groups == 0
    replayed = np.flatnonzero((scores == ref_scores).all(axis=1))  # replayed rows carry the reference's scores
    assert len(replayed) >= index.stats.replayed_queries
