"""The hybrid seen/unseen rule of the original's methods one and two (docs/method.md, "Hybrid seen/unseen rules").

Every query has two ranked answer lists of K ranks (best first):

- list A answers with a *seen* species and a score: method one, image->image search against the seen
  species' keys (score = cosine similarity); method two, a classifier over the seen species (score =
  softmax probability of the class at that rank);
- list B answers by image->DNA search against the DNA embeddings of the *unseen* species' keys.

At each rank j = 1..K the prediction is list A's label when `score_A[j] > tau` (strictly greater), else
list B's. The same choice holds at every taxonomic level (the labels of the chosen entry).

tau comes from a grid (method one: 1000 points, `np.linspace(0, 1, 1000)`; method two: 1001 points): the
value maximising the harmonic mean of micro top-1 *species* accuracy on the validation seen and unseen
queries; **ties go to the smallest tau reaching the maximum** (the first in grid order). That tau is then
applied to the test queries. Accuracies are those of :mod:`bioclip_cli.retrieval.metrics` (micro/macro
top-k per level, seen, unseen, harmonic mean) on the hybrid label lists.

The sweep is vectorised: top-1 correctness at tau depends only on rank 1 (correct = A's rank-1 hit when its
score exceeds tau, else B's), so after one sort of the rank-1 scores the accuracy at every grid point is two
cumulative sums read at `searchsorted` positions: O((Q + G) log Q) rather than G passes over the queries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bioclip_cli.config.schema import LEVELS
from bioclip_cli.retrieval.eval_result import pair_label
from bioclip_cli.retrieval.metrics import harmonic_means, topk_accuracy_of_labels

METHODS = ("one", "two")
GRID_POINTS = {"one": 1000, "two": 1001}
TIE_RULE = "the smallest tau reaching the maximum harmonic mean"
SPLITS = ("seen", "unseen")


def tau_grid(method: str) -> np.ndarray:
    """The candidate thresholds of a method: `np.linspace(0, 1, 1000)` (one) or 1001 points (two)."""
    if method not in GRID_POINTS:
        raise ValueError(f"hybrid method must be one of {METHODS}, got {method!r}")
    return np.linspace(0.0, 1.0, GRID_POINTS[method])


@dataclass
class RankedLists:
    """The two answer lists of a set of queries, and their true labels.

    `scores` [Q, K] list A's scores; `a_labels[level]`, `b_labels[level]` [Q, K] labels of lists A and B;
    `true[level]` [Q] the queries' labels.
    """

    scores: np.ndarray
    a_labels: Mapping[str, np.ndarray]
    b_labels: Mapping[str, np.ndarray]
    true: Mapping[str, np.ndarray]

    def __post_init__(self):
        self.scores = np.asarray(self.scores, dtype=np.float64)
        self.a_labels = {lv: np.asarray(v).astype(str) for lv, v in self.a_labels.items()}
        self.b_labels = {lv: np.asarray(v).astype(str) for lv, v in self.b_labels.items()}
        self.true = {lv: np.asarray(v).astype(str) for lv, v in self.true.items()}
        q, k = self.scores.shape
        for name, lists in (("a_labels", self.a_labels), ("b_labels", self.b_labels)):
            for lv, v in lists.items():
                if v.shape[0] != q or v.shape[1] < k:
                    raise ValueError(f"{name}[{lv}] of shape {v.shape} does not match scores of shape {(q, k)}")
        for lv, v in self.true.items():
            if v.shape != (q,):
                raise ValueError(f"true[{lv}] of shape {v.shape} does not match {q} queries")

    @property
    def n(self) -> int:
        return self.scores.shape[0]


def hybrid_labels(lists: RankedLists, tau: float, levels: Sequence[str] = LEVELS) -> dict[str, np.ndarray]:
    """{level: [Q, K]} labels of the rule: list A's at the ranks where its score exceeds `tau`, else list B's."""
    use_a = lists.scores > tau
    k = lists.scores.shape[1]
    return {lv: np.where(use_a, lists.a_labels[lv][:, :k], lists.b_labels[lv][:, :k]) for lv in levels}


def top1_accuracy_curve(lists: RankedLists, grid: np.ndarray, level: str = "species") -> np.ndarray:
    """Micro top-1 accuracy at `level` of the hybrid rule at every tau of `grid` ([G] floats)."""
    grid = np.asarray(grid, dtype=np.float64)
    if lists.n == 0:
        return np.zeros(len(grid))
    hit_a = lists.a_labels[level][:, 0] == lists.true[level]
    hit_b = lists.b_labels[level][:, 0] == lists.true[level]
    order = np.argsort(lists.scores[:, 0], kind="stable")
    s = lists.scores[order, 0]
    cum_a = np.concatenate([[0], np.cumsum(hit_a[order])])
    cum_b = np.concatenate([[0], np.cumsum(hit_b[order])])
    below = np.searchsorted(s, grid, side="right")  # queries with score <= tau answer from list B
    correct = (cum_a[-1] - cum_a[below]) + cum_b[below]
    return correct / lists.n


def _harmonic(seen: np.ndarray, unseen: np.ndarray) -> np.ndarray:
    total = seen + unseen
    return np.where((seen > 0) & (unseen > 0), 2 * seen * unseen / np.where(total > 0, total, 1), 0.0)


@dataclass
class TauChoice:
    tau: float
    harmonic_mean: float  # of micro top-1 species accuracy, seen and unseen, at tau
    seen: float
    unseen: float
    grid_points: int
    index: int  # position of tau in the grid


def choose_tau(val: Mapping[str, RankedLists], grid: np.ndarray, level: str = "species") -> TauChoice:
    """The tau of `grid` maximising H(micro top-1 `level` accuracy on val seen, val unseen); ties: the smallest."""
    seen = top1_accuracy_curve(val["seen"], grid, level)
    unseen = top1_accuracy_curve(val["unseen"], grid, level)
    h = _harmonic(seen, unseen)
    i = int(np.argmax(h))  # the first maximum: the smallest tau
    return TauChoice(float(grid[i]), float(h[i]), float(seen[i]), float(unseen[i]), len(grid), i)


def hybrid_accuracy(
    lists: Mapping[str, RankedLists], tau: float, ks: Sequence[int] = (1, 3, 5), levels: Sequence[str] = LEVELS
) -> dict:
    """{"seen": topk, "unseen": topk, "harmonic_mean": ...} of the rule at `tau` (the usual result cell)."""
    cell = {}
    for split in SPLITS:
        if split in lists and lists[split].n > 0:
            cell[split] = topk_accuracy_of_labels(
                hybrid_labels(lists[split], tau, levels), lists[split].true, ks, levels
            )
    if all(s in cell for s in SPLITS):
        cell["harmonic_mean"] = harmonic_means(cell["seen"], cell["unseen"])
    return cell


def evaluate_hybrid(
    method: str,
    val: Mapping[str, RankedLists],
    test: Mapping[str, RankedLists] | None = None,
    *,
    tau: float | None = None,
    ks: Sequence[int] = (1, 3, 5),
    levels: Sequence[str] = LEVELS,
) -> dict:
    """The whole protocol: tau from the validation grid (unless given), applied to `test` (else to `val`).

    Returns the usual result shape (`results`, `k`, `levels`, `n_queries`) with one cell,
    `"image|hybrid-<method>"`, plus `"hybrid"`: the method, tau and how it was chosen, the grid's best
    validation H, and which split the accuracies are of.
    """
    ks = sorted({int(k) for k in ks})
    grid = tau_grid(method)
    choice = choose_tau(val, grid)
    if tau is None:
        chosen, source = choice.tau, f"validation grid ({choice.grid_points} points in [0, 1]; ties: {TIE_RULE})"
    else:
        chosen, source = float(tau), "fixed (--tau)"
    applied = test if test is not None else val
    cell = hybrid_accuracy(applied, chosen, ks, levels)
    val_at_tau = [float(top1_accuracy_curve(val[s], np.array([chosen]))[0]) for s in SPLITS]
    return {
        "results": {pair_label("image", f"hybrid-{method}"): cell},
        "k": ks,
        "levels": list(levels),
        "n_queries": {s: applied[s].n for s in SPLITS},
        "hybrid": {
            "method": method,
            "tau": chosen,
            "tau_source": source,
            "applied_to": "test" if test is not None else "val",
            "grid_points": choice.grid_points,
            "val_best_tau": choice.tau,
            "val_best_harmonic_mean": choice.harmonic_mean,
            "val_top1_species_at_tau": {"seen": val_at_tau[0], "unseen": val_at_tau[1],
                                        "harmonic_mean": float(_harmonic(*map(np.array, val_at_tau)))},
            "rule": "per rank: list A's label when its score > tau, else list B's (image->DNA, unseen keys)",
        },
    }  # fmt: skip
