"""BZSL end to end: the tuning split, the 144-point grid, the scores (S, U, H) and the final fit.

As the fork of BZSL that BIOSCAN-CLIP ran (docs/method.md, "BZSL"):
- tuning split: Python's `random.seed(42)` then `random.shuffle` of `train_loc` (file order); per class
  (ascending) the first ceil(0.2 n) rows in shuffled order are the seen test, the rest the fit set; the
  unseen test is `val_loc`, its classes the unseen classes. PCA and the prior are fitted on the fit set.
- grid: K in {1,2,3}, k0 in {0.1,1}, k1 in {10,25}, m in {5,25,100,500}*d, s in {1,5,10}, iterated in
  that nesting order (K outermost); the first point whose H is strictly above the best so far wins (the
  first point is the start, so an all-zero grid picks it).
- final fit on `train_loc` (the fork; `fit_on="trainval"` for upstream BZSL's choice), scored on
  `test_seen` / `test_unseen`. With `train_loc`, validation classes appear in test_seen but not in the
  model, so their images score 0 (compat).
- S and U are mean per-class top-1 accuracies, H = 2SU/(S+U). With genus scoring, unseen test labels and
  the predictions of unseen test images become genus ids (genus = first word of the species name).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np

from bioclip_cli.progress import progress_bar
from bioclip_cli.retrieval.bzsl import (
    BzslParams,
    build_unseen_classes,
    fit_seen_classes,
    nearest_seen_classes,
    pca_basis,
    predict,
    project_chunk,
    seen_log_densities,
    unseen_log_densities,
)

GRID_K = (1, 2, 3)
GRID_K0 = (0.1, 1.0)
GRID_K1 = (10.0, 25.0)
GRID_M_FACTORS = (5, 25, 100, 500)
GRID_S = (1.0, 5.0, 10.0)
TUNING_SEED = 42
TUNING_FRACTION = 0.2
FIT_ON = ("train", "trainval")


def insect_defaults(dim: int = 500) -> BzslParams:
    """The fixed INSECT values used without tuning: k0 0.1, k1 10, m 5*d, s 10, K 3."""
    return BzslParams(K=3, k0=0.1, k1=10.0, m=5.0 * dim, s=10.0)


def tuning_grid(dim: int) -> list[BzslParams]:
    """The 144 grid points in the original's nesting order (K outermost, s innermost)."""
    return [
        BzslParams(K, k0, k1, float(f * dim), s)
        for K in GRID_K
        for k0 in GRID_K0
        for k1 in GRID_K1
        for f in GRID_M_FACTORS
        for s in GRID_S
    ]


def tuning_split(train_loc: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, seen-test rows) of the tuning split; see the module docstring for the rule."""
    shuffled = [int(i) for i in train_loc]
    random.Random(TUNING_SEED).shuffle(shuffled)  # the same permutation as random.seed(42); random.shuffle
    shuffled = np.asarray(shuffled, dtype=np.int64)
    own = np.asarray(labels)[shuffled]
    fit, test = [], []
    for label in np.unique(own):
        members = shuffled[own == label]
        held = math.ceil(TUNING_FRACTION * len(members))
        test.append(members[:held])
        fit.append(members[held:])
    return np.concatenate(fit), np.concatenate(test)


@dataclass(frozen=True)
class Scores:
    seen_acc: float
    unseen_acc: float
    harmonic_mean: float


def mean_per_class_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over the classes present in `truth` of the fraction of their points predicted right."""
    if len(truth) == 0:
        return 0.0
    classes, inverse = np.unique(truth, return_inverse=True)
    right = np.bincount(inverse, weights=(pred == truth).astype(float), minlength=len(classes))
    return float((right / np.bincount(inverse, minlength=len(classes))).mean())


def harmonic_mean(s: float, u: float) -> float:
    return 2 * s * u / (s + u) if s + u > 0 else 0.0


def score(pred_seen, y_seen, pred_unseen, y_unseen, genus_of_class: np.ndarray | None = None) -> Scores:
    """S, U and H; with `genus_of_class` the unseen side is scored at genus level."""
    if genus_of_class is not None:
        pred_unseen, y_unseen = genus_of_class[pred_unseen], genus_of_class[y_unseen]
    s = mean_per_class_accuracy(pred_seen, y_seen)
    u = mean_per_class_accuracy(pred_unseen, y_unseen)
    return Scores(s, u, harmonic_mean(s, u))


def genus_ids(species_of_class: list[str]) -> np.ndarray:
    """[C] genus id of each class: classes whose species names share their first word share an id."""
    genera = [name.split()[0] if name.split() else name for name in species_of_class]
    _, ids = np.unique(np.asarray(genera, dtype=object), return_inverse=True)
    return ids.astype(np.int64)


@dataclass
class Split:
    """Rows (0-based) of one BZSL experiment: the fit set and the seen / unseen test sets."""

    fit: np.ndarray
    seen_test: np.ndarray
    unseen_test: np.ndarray


def evaluate_points(
    features: np.ndarray,
    labels: np.ndarray,
    side: np.ndarray,
    split: Split,
    points: list[BzslParams],
    *,
    pca_dim: int = 500,
    covariance: str = "compat",
    genus_of_class: np.ndarray | None = None,
    chunk_size: int = 1024,
    description: str = "BZSL",
) -> tuple[list[Scores], float]:
    """Scores of every point (fit once, all points per test chunk), and the prior's jitter (0 when none)."""
    basis = pca_basis(features[split.fit], pca_dim)
    seen = fit_seen_classes(features[split.fit] @ basis, labels[split.fit])
    unseen_classes = np.unique(labels[split.unseen_test])
    unseen = {}
    for K in sorted({p.K for p in points}):
        nb = nearest_seen_classes(side[unseen_classes], side[seen.classes], K)
        unseen[K] = build_unseen_classes(seen, unseen_classes, nb)
    test_rows = np.concatenate([split.seen_test, split.unseen_test])
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(points):
        groups.setdefault((p.k0, p.k1, p.m, p.s), []).append(i)
    preds = np.empty((len(points), len(test_rows)), dtype=np.int64)
    starts = range(0, len(test_rows), chunk_size)
    with progress_bar(len(starts) * len(points), description, unit="points") as bar:
        for start in starts:
            rows = test_rows[start : start + chunk_size]
            chunk = project_chunk(seen, unseen, features[rows] @ basis)
            for members in groups.values():
                seen_lp = seen_log_densities(seen, chunk, points[members[0]], covariance)
                for i in members:
                    p = points[i]
                    unseen_lp = unseen_log_densities(seen, unseen[p.K], chunk, p)
                    preds[i, start : start + len(rows)] = predict(seen_lp, unseen_lp, seen, unseen[p.K])
                bar.advance(len(members))
    n_seen = len(split.seen_test)
    y_seen, y_unseen = labels[split.seen_test], labels[split.unseen_test]
    scores = [score(pred[:n_seen], y_seen, pred[n_seen:], y_unseen, genus_of_class) for pred in preds]
    return scores, seen.jitter


def first_best(scores: list[Scores]) -> int:
    """Index of the first point whose H is strictly above every earlier point's."""
    best = 0
    for i, s in enumerate(scores):
        if s.harmonic_mean > scores[best].harmonic_mean:
            best = i
    return best


@dataclass
class BzslResult:
    scores: Scores
    params: BzslParams
    tuned: bool
    fit_on: str
    covariance: str
    genus: bool
    pca_dim: int
    jitter: float = 0.0
    grid: list[tuple[BzslParams, Scores]] = field(default_factory=list)

    def to_json(self, details: bool = False) -> dict:
        out = {
            "seen_acc": self.scores.seen_acc,
            "unseen_acc": self.scores.unseen_acc,
            "harmonic_mean": self.scores.harmonic_mean,
            "parameters": self.params.to_json(),
        }
        if details:
            out["settings"] = {
                "tuned": self.tuned,
                "fit_on": self.fit_on,
                "covariance": self.covariance,
                "genus": self.genus,
                "pca_dim": self.pca_dim,
                "prior_jitter": self.jitter,
            }
            out["grid"] = [{**p.to_json(), **vars(s)} for p, s in self.grid]
        return out


def run_bzsl(
    features: np.ndarray,
    labels: np.ndarray,
    side: np.ndarray,
    locs: dict[str, np.ndarray],
    *,
    tune: bool = True,
    params: BzslParams | None = None,
    fit_on: str = "train",
    pca_dim: int = 500,
    covariance: str = "compat",
    genus_of_class: np.ndarray | None = None,
    chunk_size: int = 1024,
) -> BzslResult:
    """Tune on the tuning split (unless `tune` is False), refit on `fit_on`, score on test_seen/test_unseen.

    `features` [N, D] image features, `labels` [N] 0-based classes, `side` [C, D'] class side information
    (DNA class embeddings), `locs` 0-based rows of train, val, trainval, test_seen, test_unseen.
    """
    if fit_on not in FIT_ON:
        raise ValueError(f"fit_on must be one of {FIT_ON}, got {fit_on!r}")
    features = np.asarray(features, dtype=np.float64)
    options = dict(pca_dim=pca_dim, covariance=covariance, genus_of_class=genus_of_class, chunk_size=chunk_size)
    grid: list[tuple[BzslParams, Scores]] = []
    if tune:
        fit, seen_test = tuning_split(locs["train"], labels)
        points = tuning_grid(pca_dim)
        scores, _ = evaluate_points(
            features, labels, side, Split(fit, seen_test, locs["val"]), points, description="BZSL tuning", **options
        )
        grid = list(zip(points, scores))
        params = points[first_best(scores)]
    elif params is None:
        params = insect_defaults(pca_dim)
    final = Split(locs[fit_on], locs["test_seen"], locs["test_unseen"])
    (scores,), jitter = evaluate_points(features, labels, side, final, [params], description="BZSL test", **options)
    return BzslResult(scores, params, tune, fit_on, covariance, genus_of_class is not None, pca_dim, jitter, grid)
