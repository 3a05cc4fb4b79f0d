"""BZSL: hand-computed posteriors and log-densities, the fast path against the direct one, the tie and
tuning rules, the PCA, and `bioclip zsl` end to end on a planted-structure case."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from conftest import run_cli
from scipy.stats import multivariate_t

from bioclip_cli.data.bzsl_csv import class_mean_embeddings, write_dna_class_embeddings, write_image_embeddings
from bioclip_cli.data.insect_table import InsectTable, write_insect_metadata
from bioclip_cli.retrieval.bzsl import (
    BzslParams,
    build_unseen_classes,
    fit_seen_classes,
    nearest_seen_classes,
    pca_basis,
    posterior_parameters,
    predict,
    project_chunk,
    seen_log_densities,
    unseen_log_densities,
)
from bioclip_cli.retrieval.bzsl_tuning import (
    Scores,
    first_best,
    genus_ids,
    run_bzsl,
    score,
    tuning_grid,
    tuning_split,
)


def _fast(x_fit, y_fit, x_test, unseen_labels, side, params, covariance="compat"):
    seen = fit_seen_classes(x_fit, y_fit)
    nb = nearest_seen_classes(side[unseen_labels], side[seen.classes], params.K)
    unseen = build_unseen_classes(seen, np.asarray(unseen_labels), nb)
    chunk = project_chunk(seen, {params.K: unseen}, x_test)
    return (
        seen,
        unseen,
        seen_log_densities(seen, chunk, params, covariance),
        unseen_log_densities(seen, unseen, chunk, params),
    )


# --------------------------------------------------------------------------- the hand-computed case


X0 = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
X1 = np.array([[5.0, 5.0], [7.0, 5.0], [5.0, 8.0], [6.0, 7.0]])
TEST = np.array([[1.0, 1.0], [6.0, 6.0], [3.0, 3.5], [-1.0, 4.0]])


@pytest.mark.parametrize("covariance", ["compat", "paper"])
def test_two_class_case_matches_the_formulas_by_hand(covariance):
    d, k0, k1, m, s = 2, 0.1, 10.0, 10.0, 5.0
    # by hand: class statistics, the prior, then each posterior (docs/method.md, BZSL)
    xbar = [X0.mean(0), X1.mean(0)]
    np.testing.assert_allclose(xbar[0], [2 / 3, 2 / 3])
    scatter = [(X - xb).T @ (X - xb) for X, xb in zip((X0, X1), xbar)]
    mu0 = (xbar[0] + xbar[1]) / 2
    sigma0 = (scatter[0] / 2 + scatter[1] / 3) / 2  # mean of the unbiased covariances (n - 1 = 2 and 3)
    psi = (m - d - 1) * sigma0 / s
    kappa = k0 * k1 / (k0 + k1)
    expected = {}
    for label, (n, xb, S) in enumerate(zip((3, 4), xbar, scatter)):
        q = n * kappa / (n + kappa)
        diff = xb - mu0
        extra = q * (diff @ diff) * np.ones((2, 2)) if covariance == "compat" else q * np.outer(diff, diff)
        v = n + m - d + 1
        expected[label] = (
            (n * xb + kappa * mu0) / (n + kappa),
            (psi + S + extra) * (n + kappa + 1) / ((n + kappa) * v),
            v,
        )
    # unseen class 2 with K = 2: both seen classes
    kj = np.array([3 * k1 / (3 + k1), 4 * k1 / (4 + k1)])
    kt = (kj.sum() + k0) * k1 / (kj.sum() + k0 + k1)
    v2 = 7 - 2 + m - d + 1
    mu2 = (kj[0] * xbar[0] + kj[1] * xbar[1] + k0 * mu0) / (kj.sum() + k0)
    expected[2] = (mu2, (psi + scatter[0] + scatter[1]) / (kt * v2 / (kt + 1)), v2)

    x = np.concatenate([X0, X1])
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    side = np.array([[0.0], [1.0], [0.4]])
    params = BzslParams(K=2, k0=k0, k1=k1, m=m, s=s)
    seen, unseen, seen_lp, unseen_lp = _fast(x, y, TEST, [2], side, params, covariance)
    got = posterior_parameters(seen, params, covariance, unseen)
    assert seen.jitter == 0.0
    for label, (mu, sigma, v) in expected.items():
        np.testing.assert_allclose(got[label][0], mu, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got[label][1], sigma, rtol=1e-10, atol=1e-12)
        assert got[label][2] == v
    # predictive log-densities against scipy's multivariate Student-t with the hand parameters
    for label, lp in ((0, seen_lp[:, 0]), (1, seen_lp[:, 1]), (2, unseen_lp[:, 0])):
        mu, sigma, v = expected[label]
        np.testing.assert_allclose(lp, multivariate_t(loc=mu, shape=sigma, df=v).logpdf(TEST), rtol=1e-9)


@pytest.mark.parametrize("covariance", ["compat", "paper"])
def test_fast_path_agrees_with_dense_cholesky_on_many_classes(covariance):
    rng = np.random.default_rng(3)
    d, n_classes = 6, 12
    y = np.repeat(np.arange(n_classes), rng.integers(1, 9, n_classes))  # includes single-image classes
    x = rng.normal(size=(len(y), d)) + 3 * rng.normal(size=(n_classes, d))[y] + 2.0
    side = rng.normal(size=(n_classes + 4, 3))
    x_test = 3 * rng.normal(size=(40, d)) + 2.0
    for K in (1, 2, 3):
        params = BzslParams(K=K, k0=1.0, k1=25.0, m=5.0 * d, s=1.0)
        seen, unseen, seen_lp, unseen_lp = _fast(x, y, x_test, [12, 13, 14, 15], side, params, covariance)
        post = posterior_parameters(seen, params, covariance, unseen)
        dense = np.array([multivariate_t(loc=mu, shape=sig, df=v).logpdf(x_test) for mu, sig, v in post.values()]).T
        np.testing.assert_allclose(np.concatenate([seen_lp, unseen_lp], axis=1), dense, rtol=1e-9)
        labels = np.array(list(post))
        order = np.concatenate([np.arange(n_classes, n_classes + 4), np.arange(n_classes)])  # unseen first
        expected = labels[order][np.argmax(dense[:, order], axis=1)]
        np.testing.assert_array_equal(predict(seen_lp, unseen_lp, seen, unseen), expected)


def test_non_positive_definite_prior_gets_jitter_and_stays_exact():
    rng = np.random.default_rng(0)
    d = 8  # 3 classes x 2 images: Sigma0 has rank 3 < 8
    y = np.repeat([0, 1, 2], 2)
    x = rng.normal(size=(6, d))
    params = BzslParams(K=1, k0=0.1, k1=10.0, m=5.0 * d, s=10.0)
    seen, unseen, seen_lp, unseen_lp = _fast(x, y, x[:3], [3], rng.normal(size=(4, 2)), params)
    assert seen.jitter > 0
    L0 = seen.chol0
    sigma0 = sum(np.cov(x[y == c].T) for c in range(3)) / 3
    np.testing.assert_allclose(L0 @ L0.T, sigma0 + seen.jitter * np.eye(d), atol=1e-12)
    post = posterior_parameters(seen, params, "compat", unseen)
    dense = np.array([_cholesky_logpdf(x[:3], mu, sig, v) for mu, sig, v in post.values()]).T
    assert np.isfinite(dense).all()
    np.testing.assert_allclose(np.concatenate([seen_lp, unseen_lp], axis=1), dense, rtol=1e-6)


def _cholesky_logpdf(x, mu, sigma, v):
    """The Student-t log-density by a dense Cholesky factorisation (the original's route)."""
    d = len(mu)
    chol = np.linalg.cholesky(sigma)
    z = np.linalg.solve(chol, (x - mu).T)
    maha = (z * z).sum(0)
    logdet = 2 * np.log(np.diag(chol)).sum()
    return (math.lgamma((v + d) / 2) - math.lgamma(v / 2) - d / 2 * np.log(v * np.pi) - logdet / 2
            - (v + d) / 2 * np.log1p(maha / v))  # fmt: skip


# --------------------------------------------------------------------------- rules


def test_pca_matches_numpy_eigh_with_the_sign_rule():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 7)) @ rng.normal(size=(7, 7)) + 5.0
    basis = pca_basis(x, 4)
    values, vectors = np.linalg.eigh(np.cov(x, rowvar=False))
    top = vectors[:, ::-1][:, :4]
    for j in range(4):
        signed = top[:, j] * np.sign(top[np.argmax(np.abs(top[:, j])), j])
        np.testing.assert_allclose(basis[:, j], signed, atol=1e-12)
        assert basis[np.argmax(np.abs(basis[:, j])), j] > 0
    np.testing.assert_allclose(np.diag(basis.T @ np.cov(x, rowvar=False) @ basis), values[::-1][:4], rtol=1e-10)
    # the same basis whatever the input signs LAPACK would give (rows permuted)
    np.testing.assert_allclose(pca_basis(x[::-1], 4), basis, atol=1e-10)


def test_unseen_neighbour_sets_follow_the_tie_rule():
    seen_side = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    unseen_side = np.array([[0.4], [0.45], [0.5], [9.0]])
    chosen = nearest_seen_classes(unseen_side, seen_side, 2)
    # u0 takes {0, 1}; u1 has the same nearest set, so its last member moves on to 2; u2 (equidistant from
    # 0 and 1, the lower index first) finds {0, 1} and {0, 2} taken and gets {0, 3}; u3 is free: {4, 3}
    np.testing.assert_array_equal(chosen, [[0, 1], [0, 2], [0, 3], [4, 3]])
    with pytest.raises(ValueError, match="K must be between"):
        nearest_seen_classes(unseen_side, seen_side, 6)


def test_ties_in_prediction_go_to_unseen_classes_ascending():
    class Classes:
        def __init__(self, labels):
            self.classes = np.array(labels)

    seen_lp = np.array([[1.0, 2.0], [5.0, 5.0]])
    unseen_lp = np.array([[2.0, 2.0], [4.0, 1.0]])
    np.testing.assert_array_equal(predict(seen_lp, unseen_lp, Classes([0, 1]), Classes([7, 9])), [7, 0])


def test_tuning_split_follows_the_rule():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 9, 200)
    train_loc = np.sort(rng.choice(200, 120, replace=False))
    fit, test = tuning_split(train_loc, labels)
    state = random.getstate()
    random.seed(42)
    shuffled = list(train_loc)
    random.shuffle(shuffled)
    random.setstate(state)
    expected_test = set()
    for c in np.unique(labels[train_loc]):
        members = [i for i in shuffled if labels[i] == c]
        expected_test |= set(members[: math.ceil(0.2 * len(members))])
    assert set(test.tolist()) == expected_test
    assert set(fit.tolist()) == set(train_loc.tolist()) - expected_test
    assert len(fit) + len(test) == len(train_loc)


def test_grid_order_and_first_strict_improvement():
    grid = tuning_grid(500)
    assert len(grid) == 144
    assert grid[0] == BzslParams(1, 0.1, 10.0, 2500.0, 1.0)
    assert grid[1] == BzslParams(1, 0.1, 10.0, 2500.0, 5.0)
    assert grid[3] == BzslParams(1, 0.1, 10.0, 12500.0, 1.0)
    assert grid[12] == BzslParams(1, 0.1, 25.0, 2500.0, 1.0)
    assert grid[48] == BzslParams(2, 0.1, 10.0, 2500.0, 1.0)
    h = [0.1, 0.3, 0.3, 0.2, 0.3]
    assert first_best([Scores(0, 0, v) for v in h]) == 1
    assert first_best([Scores(0, 0, 0.0)] * 3) == 0


def test_scores_and_genus_level():
    # classes 0..3; genus: 0,1 -> "Aus", 2 -> "Bus", 3 -> "Aus"
    genus = genus_ids(["Aus x", "Aus y", "Bus z", "Aus w"])
    np.testing.assert_array_equal(genus, [0, 0, 1, 0])
    pred_seen, y_seen = np.array([0, 0, 1, 1, 1]), np.array([0, 0, 1, 1, 0])
    pred_unseen, y_unseen = np.array([3, 1, 2]), np.array([3, 3, 2])
    plain = score(pred_seen, y_seen, pred_unseen, y_unseen)
    assert plain.seen_acc == pytest.approx((2 / 3 + 1) / 2)
    assert plain.unseen_acc == pytest.approx((1 / 2 + 1) / 2)
    assert plain.harmonic_mean == pytest.approx(
        2 * plain.seen_acc * plain.unseen_acc / (plain.seen_acc + plain.unseen_acc)
    )
    by_genus = score(pred_seen, y_seen, pred_unseen, y_unseen, genus)
    assert by_genus.seen_acc == plain.seen_acc and by_genus.unseen_acc == 1.0


# --------------------------------------------------------------------------- end to end


def planted_case(seed=0, n_train=28, n_val=6, n_unseen=6, per_class=10, width=24):
    """INSECT-like rows with genus structure shared by the images and the DNA class embeddings."""
    rng = np.random.default_rng(seed)
    n_classes = n_train + n_val + n_unseen
    labels = np.repeat(np.arange(n_classes), per_class)
    genus = np.arange(n_classes) % 10
    centres = rng.normal(size=(10, width)) * 4
    means = centres[genus] + rng.normal(size=(n_classes, width)) * 1.5
    image = means[labels] + rng.normal(size=(len(labels), width))
    dna = means[labels] + rng.normal(size=(len(labels), width)) * 0.3
    kind = np.repeat([0, 1, 2], [n_train, n_val, n_unseen])[labels]
    test_seen = (kind < 2) & (np.arange(len(labels)) % per_class < 3)
    trainval = (kind < 2) & ~test_seen
    table = InsectTable(
        bold_ids=[f"B{i}" for i in range(len(labels))],
        ids=[f"img{i}" for i in range(len(labels))],
        labels=labels,
        species=[f"Genus{genus[c]} species{c}" for c in labels],
        nucleotides=["ACGT"] * len(labels),
        trainval=trainval,
        train=trainval & (kind == 0),
        val=trainval & (kind == 1),
        test_seen=test_seen,
        test_unseen=kind == 2,
    )
    return table, image, class_mean_embeddings(dna, labels, n_classes)


def test_run_bzsl_tuned_and_fixed_beat_chance():
    table, image, dna = planted_case()
    locs = {s: table.loc(s) for s in ("train", "val", "trainval", "test_seen", "test_unseen")}
    fixed = run_bzsl(
        image, table.labels, dna, locs, tune=False, params=BzslParams(2, 0.1, 10.0, 80.0, 10.0), pca_dim=16
    )
    chance = 1 / table.n_classes
    assert fixed.scores.seen_acc > 5 * chance and fixed.scores.unseen_acc > 5 * chance
    # fitted on train_loc, the 6 validation classes are missing from the model: their test_seen rows score 0
    on_trainval = run_bzsl(
        image, table.labels, dna, locs, tune=False, params=fixed.params, fit_on="trainval", pca_dim=16
    )
    assert on_trainval.scores.seen_acc > fixed.scores.seen_acc


def _write_trio(tmp_path, folder=None):
    table, image, dna = planted_case()
    base = tmp_path if folder is None else folder
    write_insect_metadata(table, base / "INSECT_metadata.csv")
    write_image_embeddings(image, base / "image_embedding_from_bioscan_clip.csv")
    write_dna_class_embeddings(dna, base / "dna_embedding_from_bioscan_clip.csv")
    return table


def test_zsl_cli_tuned_on_the_original_trio(tmp_path):
    table = _write_trio(tmp_path)
    out = tmp_path / "zsl.json"
    proc = run_cli(
        "zsl", "--metadata", str(tmp_path / "INSECT_metadata.csv"),
        "--image-embeddings", str(tmp_path / "image_embedding_from_bioscan_clip.csv"),
        "--dna-embeddings", str(tmp_path / "dna_embedding_from_bioscan_clip.csv"),
        "--pca-dim", "16", "--json", str(out), "--details",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "H (%)" in proc.stdout
    result = json.loads(out.read_text())
    chance = 1 / table.n_classes
    assert min(result["seen_acc"], result["unseen_acc"], result["harmonic_mean"]) > 5 * chance
    assert set(result["parameters"]) == {"k0", "k1", "m", "s", "K"}
    assert len(result["grid"]) == 144 and result["settings"]["fit_on"] == "train"
    best = max(result["grid"], key=lambda g: g["harmonic_mean"])  # max() returns the first maximum too
    assert {k: best[k] for k in ("k0", "k1", "m", "s", "K")} == result["parameters"]


@pytest.mark.slow
def test_zsl_cli_on_a_run_fixed_values_csv_and_errors(tmp_path):
    run = tmp_path / "runs" / "insect"
    _write_trio(tmp_path, run / "embeddings" / "bzsl")
    proc = run_cli("zsl", "--run", str(run), "--no-tune", "--K", "2", "--m", "80", "--pca-dim", "16", "--genus",
                   "--format", "csv")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.strip().splitlines()
    assert header == "seen_acc,unseen_acc,harmonic_mean,k0,k1,m,s,K"
    assert row.endswith(",0.1,10.0,80.0,10.0,2")
    saved = json.loads((run / "results" / "zsl.json").read_text())
    assert saved["settings"]["genus"] is True and saved["parameters"]["K"] == 2
    bad = run_cli("zsl", "--run", str(run), "--no-tune", "--m", "10", "--pca-dim", "16")
    assert bad.returncode == 1 and "--m 10 must exceed --pca-dim + 1" in bad.stderr
    missing = run_cli("zsl", "--run", str(tmp_path / "elsewhere"))
    assert missing.returncode == 1 and "bioclip embed --run" in missing.stderr
    alone = run_cli("zsl", "--metadata", str(run / "embeddings" / "bzsl" / "INSECT_metadata.csv"))
    assert alone.returncode == 1 and "missing: --image-embeddings, --dna-embeddings" in alone.stderr


def test_bench_run_reports_the_bzsl_figures():
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("bench_run_bzsl", REPO / "bench" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    result = {"rows": 100, "classes": 10, "pca_dim": 5, "grid_points": 144, "ours_tuned_run_s": 30.0,
              "baseline_extrapolated_s": 3000.0, "max_relative_difference": 1e-11}  # fmt: skip
    speed, agreement = run.figures("bzsl", result)
    assert speed["ratio"] == pytest.approx(0.01) and speed["ok"] == "yes" and agreement["ok"] == "yes"
