"""BZSL (`bioclip zsl`) at INSECT size: our tuned run vs a direct reimplementation of the original algorithm.

Synthetic features of the INSECT shapes (21,212 rows x 768, 1,213 classes: 992 train, 100 validation and
121 test-unseen classes; 3,525 test-seen rows; planted genus/class structure so the scores mean something)
and DNA class embeddings. Measures, in one run:
  - ours: the full tuned run (`run_bzsl`: 144 grid points on the tuning split, then the final fit and test);
  - baseline: the original algorithm as written (labelled BASELINE below): per grid point and class a dense
    d x d covariance, its Cholesky factorisation and a triangular solve of every test point. It is far
    too slow to run whole, so it runs on `--baseline-classes` classes of one grid point of the tuning
    split, and its time is extrapolated per class to all seen + unseen classes and the 144 grid points
    (plus the final fit): said so in the output. The two agree on those classes' log-densities (checked).

    python bench/bench_bzsl.py                  # full INSECT size (minutes on 2 cores)
    python bench/bench_bzsl.py --scale 0.1      # a quick look: 10% of the classes
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy.special import gammaln
from threadpoolctl import threadpool_limits

from bioclip_cli.progress import set_quiet
from bioclip_cli.retrieval.bzsl import (
    build_unseen_classes,
    cholesky_with_jitter,
    fit_seen_classes,
    nearest_seen_classes,
    pca_basis,
    project_chunk,
    seen_log_densities,
)
from bioclip_cli.retrieval.bzsl_tuning import Split, insect_defaults, run_bzsl, tuning_grid, tuning_split

ROWS, WIDTH, TRAIN_CLASSES, VAL_CLASSES, UNSEEN_CLASSES, TEST_SEEN = 21_212, 768, 992, 100, 121, 3_525


def synthetic_insect(scale: float = 1.0, seed: int = 0, width: int = WIDTH):
    """(features [N, D], labels [N], DNA class embeddings [C, D], locs) with INSECT's shapes times `scale`."""
    rng = np.random.default_rng(seed)
    n_train, n_val, n_unseen = (max(4, round(c * scale)) for c in (TRAIN_CLASSES, VAL_CLASSES, UNSEEN_CLASSES))
    n_classes = n_train + n_val + n_unseen
    rows = max(n_classes * 4, round(ROWS * scale))
    labels = np.sort(np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, rows - n_classes)]))
    rng.shuffle(labels)
    latent = 64
    genus = rng.integers(0, max(2, n_classes // 4), n_classes)
    centres = rng.normal(size=(genus.max() + 1, latent)) * 3.0
    class_means = centres[genus] + rng.normal(size=(n_classes, latent)) * 1.5
    to_image, to_dna = rng.normal(size=(latent, width)) / 8, rng.normal(size=(latent, width)) / 8
    features = (class_means[labels] + rng.normal(size=(rows, latent))) @ to_image
    features += rng.normal(size=features.shape) * 0.05
    side = (class_means + rng.normal(size=class_means.shape) * 0.5) @ to_dna
    kind = np.repeat([0, 1, 2], [n_train, n_val, n_unseen])[labels]  # train / val / unseen class rows
    seen_rows = np.flatnonzero(kind < 2)
    test_seen = np.zeros(rows, bool)
    test_seen[rng.choice(seen_rows, min(len(seen_rows) // 5, round(TEST_SEEN * scale)), replace=False)] = True
    trainval = (kind < 2) & ~test_seen
    locs = {
        "train": np.flatnonzero(trainval & (kind == 0)),
        "val": np.flatnonzero(trainval & (kind == 1)),
        "trainval": np.flatnonzero(trainval),
        "test_seen": np.flatnonzero(test_seen),
        "test_unseen": np.flatnonzero(kind == 2),
    }
    return features, labels, side, locs


# --------------------------------------------------------------------------------------------- BASELINE
# The original algorithm written directly (as the authors' Python/MATLAB code does it): for each class a
# dense d x d posterior covariance, a Cholesky factorisation, and a triangular solve of all test points.


def baseline_seen_log_densities(x_fit, y_fit, x_test, params, classes, covariance="compat"):
    """BASELINE: [T, len(classes)] Student-t log-densities of the seen classes, one dense Cholesky each."""
    d = x_fit.shape[1]
    all_classes = np.unique(y_fit)
    means = np.array([x_fit[y_fit == c].mean(0) for c in all_classes])
    mu0 = means.mean(0)
    sigma0 = np.mean([np.cov(x_fit[y_fit == c].T) for c in all_classes if (y_fit == c).sum() > 1], axis=0)
    chol0, jitter = cholesky_with_jitter(sigma0)  # the same stated fallback as ours (0 on a well-posed case)
    sigma0 = sigma0 + jitter * np.eye(d)
    psi = (params.m - d - 1) * sigma0 / params.s
    kappa = params.k0 * params.k1 / (params.k0 + params.k1)
    out = []
    for c in classes:
        xc = x_fit[y_fit == c]
        n, xbar = len(xc), xc.mean(0)
        scatter = (xc - xbar).T @ (xc - xbar)
        diff = xbar - mu0
        q = n * kappa / (n + kappa)
        extra = q * diff @ diff * np.ones((d, d)) if covariance == "compat" else q * np.outer(diff, diff)
        v = n + params.m - d + 1
        sigma = (psi + scatter + extra) * (n + kappa + 1) / ((n + kappa) * v)
        mu = (n * xbar + kappa * mu0) / (n + kappa)
        chol = np.linalg.cholesky(sigma)
        z = np.linalg.solve(chol, (x_test - mu).T)
        maha = (z * z).sum(0)
        logdet = 2 * np.log(np.diag(chol)).sum()
        out.append(
            gammaln((v + d) / 2) - gammaln(v / 2) - d / 2 * np.log(v * np.pi) - logdet / 2
            - (v + d) / 2 * np.log1p(maha / v)
        )  # fmt: skip
    return np.array(out).T


def main(
    scale: float = 1.0, baseline_classes: int = 8, pca_dim: int = 500, seed: int = 0, threads: int | None = None
) -> dict:
    """Time both; `threads` limits BLAS threads for both (None: the library default)."""
    with threadpool_limits(limits=threads, user_api="blas"):
        return _main(scale, baseline_classes, pca_dim, seed)


def threadpool_info_threads() -> int | None:
    from threadpoolctl import threadpool_info

    blas = [pool["num_threads"] for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return max(blas) if blas else None


def _main(scale: float, baseline_classes: int, pca_dim: int, seed: int) -> dict:
    set_quiet(True)
    load = os.getloadavg()[0]
    features, labels, side, locs = synthetic_insect(scale, seed)
    pca_dim = min(pca_dim, features.shape[1])
    start, cpu = time.perf_counter(), time.process_time()
    result = run_bzsl(features, labels, side, locs, pca_dim=pca_dim)
    ours, ours_cpu = time.perf_counter() - start, time.process_time() - cpu

    # BASELINE on a few classes of one grid point of the tuning split, extrapolated
    fit, seen_test = tuning_split(locs["train"], labels)
    split = Split(fit, seen_test, locs["val"])
    basis = pca_basis(features[split.fit], pca_dim)
    x_fit, y_fit = features[split.fit] @ basis, labels[split.fit]
    x_test = features[np.concatenate([split.seen_test, split.unseen_test])] @ basis
    params = insect_defaults(pca_dim)
    some = np.unique(y_fit)[:baseline_classes]
    start, cpu = time.perf_counter(), time.process_time()
    reference = baseline_seen_log_densities(x_fit, y_fit, x_test, params, some)
    base_part, base_cpu = time.perf_counter() - start, time.process_time() - cpu
    seen = fit_seen_classes(x_fit, y_fit)
    unseen_classes = np.unique(labels[split.unseen_test])
    nb = nearest_seen_classes(side[unseen_classes], side[seen.classes], params.K)
    checked = slice(0, 1024)  # the first 1,024 test points are enough for the agreement check
    chunk = project_chunk(seen, {params.K: build_unseen_classes(seen, unseen_classes, nb)}, x_test[checked])
    ours_lp = seen_log_densities(seen, chunk, params)[:, np.searchsorted(seen.classes, some)]
    agreement = float(np.max(np.abs(ours_lp / reference[checked] - 1)))
    classes_per_point = len(seen.classes) + len(unseen_classes)
    points = len(tuning_grid(pca_dim))
    per_class = base_part / len(some)
    # the final fit scores more test points than tuning; scale its per-class cost by the test sizes
    final_tests = len(locs["test_seen"]) + len(locs["test_unseen"])
    final_classes = len(np.unique(labels[locs["train"]])) + len(np.unique(labels[locs["test_unseen"]]))
    baseline = per_class * (classes_per_point * points + final_classes * final_tests / len(x_test))
    out = {
        "load_average_at_start": load,
        "rows": len(features),
        "blas_threads": threadpool_info_threads(),
        "classes": int(labels.max()) + 1,
        "pca_dim": pca_dim,
        "grid_points": points,
        "ours_tuned_run_s": ours,
        "ours_tuned_run_cpu_s": ours_cpu,
        "baseline_cpu_s_per_class_and_point": base_cpu / len(some),
        "baseline_s_per_class_and_point": per_class,
        "baseline_extrapolated_s": baseline,
        "baseline_vs_ours": baseline / ours,
        "max_relative_difference": agreement,
        "seen_acc": result.scores.seen_acc,
        "unseen_acc": result.scores.unseen_acc,
        "harmonic_mean": result.scores.harmonic_mean,
        "parameters": result.params.to_json(),
    }
    print(
        f"INSECT-sized case x{scale:g}: {len(features):,} rows x {features.shape[1]}, {out['classes']:,} classes, "
        f"d={pca_dim}; BLAS threads {out['blas_threads']}; load average at the start {load:.1f}"
    )
    print(f"ours, the whole tuned run ({points} points + final fit): {ours:.1f} s ({ours_cpu:.1f} s CPU)")
    print(
        f"BASELINE (direct dense Cholesky per class and point), measured on {len(some)} classes of one point: "
        f"{per_class:.3f} s per class ({base_cpu / len(some):.3f} s CPU); extrapolated to {classes_per_point} classes x {points} points + final fit: "
        f"{baseline:,.0f} s ({baseline / 3600:.1f} h)"
    )
    print(f"baseline / ours: {baseline / ours:,.0f}x; log-densities agree to {agreement:.1e} relative")
    print(f"S {out['seen_acc']:.4f}  U {out['unseen_acc']:.4f}  H {out['harmonic_mean']:.4f}  {out['parameters']}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of INSECT's classes and rows")
    parser.add_argument("--baseline-classes", type=int, default=8, help="classes the baseline is timed on")
    parser.add_argument("--pca-dim", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="BLAS threads for both (default: the library's)")
    args = parser.parse_args()
    main(args.scale, args.baseline_classes, args.pca_dim, args.seed, args.threads)
