"""Retrieval evaluation at BIOSCAN-5M scale: faiss exact search vs torch matmul + top-k, and the metrics.

Synthetic float32 embeddings of the 5M validation shapes (14,757 seen + 8,819 unseen queries, 325,668
`all_keys`, width 768) and hierarchical labels. Measures, in one run:
  - search: faiss `IndexFlatIP` (the evaluation's path, `FlatIndex`), top-5 for all queries;
  - baseline: a torch matmul + `topk` of the same shapes (chunked to bound the score matrix);
  - screened: the bf16-screened exact search (`ScreenedIndex`, the default of `eval`) against the faiss
    search above, in the same process right after it, with the share of identical top-5 lists;
  - metrics: label encoding + micro/macro top-1/3/5 for four levels, seen and unseen, + harmonic means.
The metrics must cost under 10% of the search.

    python bench/bench_retrieval.py                 # the full case (~1 GB of keys; minutes on 2 cores)
    python bench/bench_retrieval.py --scale 0.05    # a quick look: 5% of the queries and keys
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bioclip_cli.retrieval.metrics import encode_labels, harmonic_means, topk_accuracy
from bioclip_cli.retrieval.screened_search import ScreenedIndex
from bioclip_cli.retrieval.search import FlatIndex

SEEN, UNSEEN, KEYS, WIDTH, K = 14_757, 8_819, 325_668, 768, (1, 3, 5)
LEVELS = ("order", "family", "genus", "species")


def _unit(rng, n, width):
    x = rng.standard_normal((n, width), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _labels(species: np.ndarray) -> dict[str, np.ndarray]:
    """Nested levels from species ids: 8 species per genus, 6 genera per family, 20 families per order."""
    return {
        "order": np.char.add("o", (species // 960).astype(str)),
        "family": np.char.add("f", (species // 48).astype(str)),
        "genus": np.char.add("g", (species // 8).astype(str)),
        "species": np.char.add("s", species.astype(str)),
    }


def _torch_search(queries: np.ndarray, keys: np.ndarray, k: int, chunk: int) -> np.ndarray:
    import torch  # imported (and warmed up) before the clock starts, see main()

    keys_t = torch.from_numpy(keys)
    out = np.empty((len(queries), k), dtype=np.int64)
    with torch.inference_mode():
        for s in range(0, len(queries), chunk):
            out[s : s + chunk] = torch.topk(
                torch.from_numpy(queries[s : s + chunk]) @ keys_t.T, k, dim=1
            ).indices.numpy()
    return out


def _load() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def _screened(queries: np.ndarray, keys: np.ndarray, neighbors: np.ndarray, faiss_s: float) -> dict:
    """The screened search of the same queries and keys (build included) against faiss's lists."""
    import torch  # noqa: F401  (the one-time import off the clock, as for the torch baseline)

    load = _load()
    t = time.perf_counter()
    index = ScreenedIndex(keys, normalize=False)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    _, screened = index.search(queries, max(K), normalize=False)
    search_s = time.perf_counter() - t
    stats = index.stats
    return {
        "screened_build_s": build_s,
        "screened_search_s": search_s,
        "screened_total_s": build_s + search_s,
        "faiss_vs_screened": faiss_s / (build_s + search_s),
        "screened_same_lists": float((screened == neighbors).all(axis=1).mean()),
        "screened_candidates_per_query": stats.mean_candidates,
        "screened_fallback_groups": stats.fallback_groups,
        "screened_groups": stats.groups,
        "load_before_screened": load,
        "load_after_screened": _load(),
    }


def main(scale: float = 1.0, torch_chunk: int = 512, seed: int = 0, torch_baseline: bool = True) -> dict:
    n_seen, n_unseen, n_keys = (max(64, int(n * scale)) for n in (SEEN, UNSEEN, KEYS))
    rng = np.random.default_rng(seed)
    keys = _unit(rng, n_keys, WIDTH)
    queries = _unit(rng, n_seen + n_unseen, WIDTH)
    key_species = rng.integers(0, 9_600, n_keys)
    seen_labels = _labels(rng.choice(key_species, n_seen))
    unseen_labels = _labels(rng.integers(9_600, 12_000, n_unseen))  # species absent from the keys' seen part
    key_labels = _labels(key_species)

    load_before = _load()
    t = time.perf_counter()
    index = FlatIndex(keys, device="cpu", normalize=False)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    _, neighbors = index.search(queries, max(K), normalize=False)
    search_s = time.perf_counter() - t
    del index
    screened = _screened(queries, keys, neighbors, build_s + search_s)

    t = time.perf_counter()
    _, (seen_codes, unseen_codes, key_codes) = encode_labels(seen_labels, unseen_labels, key_labels, levels=LEVELS)
    seen = topk_accuracy(neighbors[:n_seen], seen_codes, key_codes, K, LEVELS)
    unseen = topk_accuracy(neighbors[n_seen:], unseen_codes, key_codes, K, LEVELS)
    harmonic_means(seen, unseen)
    metrics_s = time.perf_counter() - t

    import torch

    torch.topk(torch.ones(8, 8) @ torch.ones(8, 8), 2, dim=1)  # import and first-call costs off the clock
    torch_s, same_lists = float("nan"), float("nan")
    if torch_baseline:
        t = time.perf_counter()
        torch_neighbors = _torch_search(queries, keys, max(K), torch_chunk)
        torch_s = time.perf_counter() - t
        same_lists = float((torch_neighbors == neighbors).all(axis=1).mean())

    result = {
        "queries": n_seen + n_unseen,
        "keys": n_keys,
        "width": WIDTH,
        "build_s": build_s,
        "search_s": search_s,
        "metrics_s": metrics_s,
        "total_s": build_s + search_s + metrics_s,
        "torch_matmul_topk_s": torch_s,
        "search_vs_torch": search_s / torch_s,
        "metrics_share_of_search": metrics_s / search_s,
        "same_neighbour_lists": same_lists,
        "load_before_faiss": load_before,
        **screened,
    }
    print(
        f"retrieval at {scale:g} x 5M scale: {n_seen:,} seen + {n_unseen:,} unseen queries, {n_keys:,} keys, width {WIDTH}"
    )
    print(f"{'step':<44}{'seconds':>10}")
    for label, key in [
        ("normalised keys -> faiss IndexFlatIP", "build_s"),
        ("faiss exact search, top-5 (FlatIndex)", "search_s"),
        ("metrics: encode labels + micro/macro + H.M.", "metrics_s"),
        ("total (build + search + metrics)", "total_s"),
        (f"baseline: torch matmul + topk (chunks of {torch_chunk})", "torch_matmul_topk_s"),
        ("screened (bf16 screen + faiss rescoring): build", "screened_build_s"),
        ("screened: search, top-5", "screened_search_s"),
    ]:
        print(f"{label:<44}{result[key]:>10.2f}")
    print(f"search / torch baseline: {result['search_vs_torch']:.2f}x the time")
    print(f"metrics / search: {100 * result['metrics_share_of_search']:.2f}% (must be < 10%)")
    print(f"queries with the same top-5 list in both: {100 * same_lists:.2f}%")
    print(
        f"faiss (build + search) / screened (build + search): {result['faiss_vs_screened']:.2f}x faster; "
        f"same top-5 lists: {100 * result['screened_same_lists']:.3f}%; "
        f"{result['screened_candidates_per_query']:.1f} keys rescored per query, "
        f"{result['screened_fallback_groups']} of {result['screened_groups']} query groups fell back; "
        f"load average {load_before:.1f} before faiss, {result['load_before_screened']:.1f} / "
        f"{result['load_after_screened']:.1f} before / after the screened search"
    )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 5M shapes (queries and keys)")
    parser.add_argument("--torch-chunk", type=int, default=512, help="queries per torch matmul")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch matmul + topk baseline")
    args = parser.parse_args()
    main(scale=args.scale, torch_chunk=args.torch_chunk, torch_baseline=not args.no_torch)
