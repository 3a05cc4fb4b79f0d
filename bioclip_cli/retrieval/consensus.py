"""The consensus label of a specimen's nearest references, level by level (what `bioclip predict` answers).

Each of the k neighbours votes for its label at a level; neighbours whose label there is `not_classified` do
not vote. The label with most votes wins; a tie goes to the label whose voters have the larger summed
similarity, and a remaining tie to the label of the nearer neighbour. With no vote at all the consensus is
`not_classified`.
"""

from __future__ import annotations

from collections.abc import Sequence

from bioclip_cli.data.taxonomy import LEVELS, NOT_CLASSIFIED

CONSENSUS_RULE = (
    "majority vote of the k neighbours per level (not_classified neighbours do not vote); "
    "ties: larger summed similarity, then the nearer neighbour"
)


def consensus(neighbors: Sequence[dict], levels: Sequence[str] = LEVELS) -> dict[str, dict]:
    """{level: {"label", "votes", "similarity"}} by :data:`CONSENSUS_RULE`; `neighbors` best first."""
    out = {}
    for level in levels:
        tally: dict[str, list] = {}  # label -> [votes, summed similarity, best rank]
        for rank, n in enumerate(neighbors):
            label = n[level]
            if label == NOT_CLASSIFIED:
                continue
            entry = tally.setdefault(label, [0, 0.0, rank])
            entry[0] += 1
            entry[1] += float(n["similarity"])
        if not tally:
            out[level] = {"label": NOT_CLASSIFIED, "votes": 0, "similarity": 0.0}
            continue
        label, (votes, weight, _) = max(tally.items(), key=lambda kv: (kv[1][0], kv[1][1], -kv[1][2]))
        out[level] = {"label": label, "votes": votes, "similarity": round(weight, 6)}
    return out
