"""The BIOSCAN-1M partition rules: records -> seen/unseen species, query/key halves, pretraining rows.

The published BIOSCAN-1M partition was drawn by the original project's generator, whose seed defaulted to
none (not reproducible). This module applies the same rules (docs/method.md, "Partitions and per-split
export") to any table of records, reproducibly from a seed:

1. records without a species name (empty or ``not_classified``) -> ``no_split`` (pretraining only);
2. species with fewer than 10 records are the tail; a tail species with a single record -> ``single_species``;
3. of the common species (10 records or more), 80% are seen; each seen species' records (shuffled) are cut at
   the floored 0.7 / 0.8 / 0.9 boundaries into ``train_seen`` / ``val_seen`` / ``test_seen`` / ``seen_keys``;
4. the other common species are unseen: half of them (floored) go to validation, the rest to test; each
   species' records (shuffled) are halved (floored) into queries (``val_unseen`` / ``test_unseen``) and keys
   (``val_unseen_keys`` / ``test_unseen_keys``);
5. tail species with 2-9 records are treated as in 4 and appended to the unseen groups.

Derived groups, as in the published file: ``no_split_and_seen_train`` = ``no_split`` + ``train_seen`` and
``all_keys`` = ``seen_keys`` + ``val_unseen_keys`` + ``test_unseen_keys``. Each group lists row indices in
ascending order (the table's order), never a record twice.

All random draws come from one ``numpy.random.default_rng(seed)`` in a fixed order (species sorted by name
first), so the same table and seed give the same partition on every machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bioclip_cli.data.taxonomy import NOT_CLASSIFIED

TAIL_BELOW = 10  # a species with fewer records than this is in the tail
SEEN_FRACTION = 0.8
SEEN_CUTS = (0.7, 0.8, 0.9)  # train | val | test | keys
BASE_GROUPS: tuple[str, ...] = (
    "no_split",
    "single_species",
    "train_seen",
    "val_seen",
    "test_seen",
    "seen_keys",
    "val_unseen",
    "val_unseen_keys",
    "test_unseen",
    "test_unseen_keys",
)
DERIVED_GROUPS: dict[str, tuple[str, ...]] = {
    "no_split_and_seen_train": ("no_split", "train_seen"),
    "all_keys": ("seen_keys", "val_unseen_keys", "test_unseen_keys"),
}
GROUPS_1M_PARTITION: tuple[str, ...] = BASE_GROUPS + tuple(DERIVED_GROUPS)


def has_species(name: str) -> bool:
    """Whether a species cell names a species (not empty, not ``not_classified``)."""
    name = name.strip()
    return bool(name) and name != NOT_CLASSIFIED


def partition_1m(species: Sequence[str], seed: int) -> dict[str, np.ndarray]:
    """Group name -> ascending row indices of `species` (one species name per record) by the 1M rules."""
    species = [str(s) for s in species]
    rng = np.random.default_rng(seed)
    rows_of: dict[str, list[int]] = {}
    no_split = []
    for i, name in enumerate(species):
        if has_species(name):
            rows_of.setdefault(name.strip(), []).append(i)
        else:
            no_split.append(i)
    names = sorted(rows_of)
    common = [s for s in names if len(rows_of[s]) >= TAIL_BELOW]
    tail = [s for s in names if 2 <= len(rows_of[s]) < TAIL_BELOW]
    groups: dict[str, list[int]] = {g: [] for g in BASE_GROUPS}
    groups["no_split"] = no_split
    groups["single_species"] = [rows_of[s][0] for s in names if len(rows_of[s]) == 1]

    common = [common[i] for i in rng.permutation(len(common))]
    n_seen = int(len(common) * SEEN_FRACTION)
    seen, unseen = sorted(common[:n_seen]), sorted(common[n_seen:])
    for name in seen:
        rows = _shuffled(rows_of[name], rng)
        cuts = [int(len(rows) * c) for c in SEEN_CUTS]
        for group, part in zip(("train_seen", "val_seen", "test_seen", "seen_keys"), np.split(rows, cuts)):
            groups[group] += part.tolist()
    for names_part in (unseen, tail):
        _unseen_halves(names_part, rows_of, rng, groups)
    out = {g: np.array(sorted(rows), dtype=np.int64) for g, rows in groups.items()}
    for name, parts in DERIVED_GROUPS.items():
        out[name] = np.sort(np.concatenate([out[p] for p in parts]))
    return out


def _shuffled(rows: list[int], rng: np.random.Generator) -> np.ndarray:
    return np.asarray(rows, dtype=np.int64)[rng.permutation(len(rows))]


def _unseen_halves(names: list[str], rows_of: dict[str, list[int]], rng, groups: dict[str, list[int]]) -> None:
    """Half of the species (floored) to validation, the rest to test; each species' records halved into
    queries and keys."""
    order = [names[i] for i in rng.permutation(len(names))]
    half = len(order) // 2
    for split, part in (("val", sorted(order[:half])), ("test", sorted(order[half:]))):
        for name in part:
            rows = _shuffled(rows_of[name], rng)
            cut = len(rows) // 2
            groups[f"{split}_unseen"] += rows[:cut].tolist()
            groups[f"{split}_unseen_keys"] += rows[cut:].tolist()


def partition_counts(groups: dict[str, np.ndarray], species: Sequence[str]) -> list[dict]:
    """Rows ``{group, records, species}`` for a report."""
    names = np.asarray([str(s).strip() for s in species], dtype=object)
    out = []
    for group in GROUPS_1M_PARTITION:
        rows = groups.get(group, np.array([], dtype=np.int64))
        n_species = len({s for s in names[rows] if has_species(s)}) if len(rows) else 0
        out.append({"group": group, "records": int(len(rows)), "species": n_species})
    return out
