"""The hybrid seen/unseen rule (methods one and two): a hand-made case, the tau grid, the val->test protocol."""

from __future__ import annotations

import numpy as np
import pytest

from bioclip_cli.retrieval.hybrid import (
    RankedLists,
    choose_tau,
    evaluate_hybrid,
    hybrid_accuracy,
    hybrid_labels,
    tau_grid,
    top1_accuracy_curve,
)
from bioclip_cli.retrieval.metrics import harmonic_mean

LEVELS = ("genus", "species")


def _lists(scores, a_species, b_species, true_species) -> RankedLists:
    genus = np.vectorize(lambda s: s[:2])  # genus = the first two letters of the species
    a, b, t = np.array(a_species), np.array(b_species), np.array(true_species)
    return RankedLists(
        np.array(scores), {"genus": genus(a), "species": a}, {"genus": genus(b), "species": b},
        {"genus": genus(t), "species": t},
    )  # fmt: skip


# Seen queries: A is right at rank 1 with scores 0.9 and 0.6; unseen queries: B is right at rank 1, while A
# (a wrong seen species) scores 0.7 and 0.4. Top-1 species, as a function of tau:
#   tau < 0.4: seen 1, unseen 0        -> H 0
#   0.4 <= tau < 0.6: seen 1, unseen 1/2  -> H 2/3   (first maximum)
#   0.6 <= tau < 0.7: seen 1/2, unseen 1/2 -> H 1/2
#   0.7 <= tau < 0.9: seen 1/2, unseen 1  -> H 2/3   (a tie: the smaller tau wins)
#   tau >= 0.9: seen 0, unseen 1       -> H 0
VAL = {
    "seen": _lists(
        [[0.9, 0.5, 0.2], [0.6, 0.3, 0.1]],
        [["saA", "sxX", "syY"], ["sbB", "saA", "sxX"]],
        [["upP", "uqQ", "urR"], ["uqQ", "upP", "urR"]],
        ["saA", "sbB"],
    ),
    "unseen": _lists(
        [[0.7, 0.65, 0.1], [0.4, 0.35, 0.3]],
        [["saA", "sbB", "sxX"], ["sbB", "saA", "syY"]],
        [["upP", "uqQ", "urR"], ["uqQ", "urR", "upP"]],
        ["upP", "uqQ"],
    ),
}


def test_grid_sizes_of_the_two_methods():
    assert len(tau_grid("one")) == 1000 and len(tau_grid("two")) == 1001
    assert tau_grid("one")[0] == 0.0 and tau_grid("one")[-1] == 1.0 and tau_grid("two")[500] == 0.5
    with pytest.raises(ValueError):
        tau_grid("three")


def test_the_right_tau_is_the_smallest_grid_point_of_the_first_maximum():
    choice = choose_tau(VAL, tau_grid("one"))
    assert choice.index == 400  # 400/999 = 0.4004 is the first grid point >= 0.4 (399/999 < 0.4)
    assert choice.tau == pytest.approx(400 / 999)
    assert (choice.seen, choice.unseen) == (1.0, 0.5)
    assert choice.harmonic_mean == pytest.approx(2 / 3)
    two = choose_tau(VAL, tau_grid("two"))
    assert two.tau == 0.4  # exactly a grid point of 1001: score 0.4 is not > 0.4, so B answers: H 2/3 already


def test_each_per_rank_choice_at_the_chosen_tau():
    tau = 400 / 999
    seen = hybrid_labels(VAL["seen"], tau, LEVELS)["species"]
    unseen = hybrid_labels(VAL["unseen"], tau, LEVELS)["species"]
    # q0 scores 0.9, 0.5 > tau: A, A; 0.2: B.  q1: 0.6 A; 0.3, 0.1 B
    assert seen.tolist() == [["saA", "sxX", "urR"], ["sbB", "upP", "urR"]]
    # u0 scores 0.7, 0.65 > tau: A, A; 0.1: B.  u1: 0.4 (not > tau), 0.35, 0.3: B everywhere
    assert unseen.tolist() == [["saA", "sbB", "urR"], ["uqQ", "urR", "upP"]]
    genus = hybrid_labels(VAL["seen"], tau, LEVELS)["genus"]
    assert genus.tolist() == [["sa", "sx", "ur"], ["sb", "up", "ur"]]  # the same entry at every level


def test_accuracies_at_tau_and_their_harmonic_mean():
    cell = hybrid_accuracy(VAL, 400 / 999, ks=(1, 3), levels=LEVELS)
    assert cell["seen"]["micro"]["1"]["species"] == 1.0
    assert cell["unseen"]["micro"]["1"]["species"] == 0.5
    assert cell["unseen"]["micro"]["3"]["species"] == 0.5  # u0 never gets uP: A holds ranks 1-2, B's rank 3 is uR
    assert cell["unseen"]["macro"]["1"]["species"] == 0.5  # two classes, one query each
    assert cell["harmonic_mean"]["micro"]["1"]["species"] == pytest.approx(harmonic_mean(1.0, 0.5))
    assert harmonic_mean(0.0, 1.0) == 0.0


def test_the_vectorised_sweep_equals_a_plain_loop_on_random_lists():
    rng = np.random.default_rng(3)
    q, k = 60, 5
    names = np.array([f"s{i}" for i in range(6)])
    lists = RankedLists(
        np.round(rng.random((q, k)), 3),  # rounded: scores equal to grid points happen
        {"species": names[rng.integers(0, 6, (q, k))]}, {"species": names[rng.integers(0, 6, (q, k))]},
        {"species": names[rng.integers(0, 6, q)]},
    )  # fmt: skip
    grid = tau_grid("two")
    curve = top1_accuracy_curve(lists, grid)
    loop = [np.mean(hybrid_labels(lists, t, ("species",))["species"][:, 0] == lists.true["species"]) for t in grid]
    np.testing.assert_array_equal(curve, np.array(loop))


def test_val_chooses_tau_and_test_gets_it():
    # test: the unseen query scores 0.5, so test's own best tau (>= 0.5) differs from val's (0.4004)
    test = {
        "seen": _lists([[0.8, 0.2, 0.1]], [["saA", "sbB", "sxX"]], [["upP", "uqQ", "urR"]], ["saA"]),
        "unseen": _lists([[0.5, 0.2, 0.1]], [["sbB", "saA", "sxX"]], [["uqQ", "upP", "urR"]], ["uqQ"]),
    }
    out = evaluate_hybrid("one", VAL, test, ks=(1, 3), levels=LEVELS)
    h = out["hybrid"]
    assert h["tau"] == pytest.approx(400 / 999) and h["applied_to"] == "test"
    assert h["val_best_harmonic_mean"] == pytest.approx(2 / 3) and h["grid_points"] == 1000
    cell = out["results"]["image|hybrid-one"]
    assert cell["seen"]["micro"]["1"]["species"] == 1.0
    assert cell["unseen"]["micro"]["1"]["species"] == 0.0  # 0.5 > val's tau: A's wrong seen species
    assert cell == hybrid_accuracy(test, 400 / 999, ks=(1, 3), levels=LEVELS)
    assert out["n_queries"] == {"seen": 1, "unseen": 1} and out["k"] == [1, 3]
    fixed = evaluate_hybrid("one", VAL, test, tau=0.55, ks=(1, 3), levels=LEVELS)
    assert fixed["hybrid"]["tau"] == 0.55 and fixed["hybrid"]["tau_source"].startswith("fixed")
    assert fixed["results"]["image|hybrid-one"]["unseen"]["micro"]["1"]["species"] == 1.0
    only_val = evaluate_hybrid("two", VAL, None, ks=(1,), levels=LEVELS)
    assert only_val["hybrid"]["applied_to"] == "val" and only_val["hybrid"]["tau"] == 0.4
