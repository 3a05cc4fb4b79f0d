"""The INSECT species -> order / family / genus table, shipped as package data (no network lookup).

`insect_taxonomy.json` beside this module is an unchanged copy of the BIOSCAN-CLIP repository's
`data/INSECT/specie_to_other_labels.json` (MIT licence, notice in `insect_taxonomy.LICENSE`; the ranks were
looked up in NCBI Taxonomy by that repository's authors). It maps each of the 1,213 INSECT species, keyed by
the exact species string of the `.mat` files, to ``{"order", "family", "genus"}``; a rank it lacks or marks
``not_classified`` is ``not_classified`` here. docs/method.md ("INSECT dataset") lists its quirks
(35 species unclassified at every rank, 3 without a genus, 23 whose NCBI genus differs from the name).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from importlib import resources

import numpy as np

from bioclip_cli.data.taxonomy import NOT_CLASSIFIED, clean_rank

TAXONOMY_FILE = "insect_taxonomy.json"
TAXONOMY_SHA256 = "03248f8a0677f26e0b626d1e6974fa49a2b0ead138bde33b60ea070f4f01d080"
RANKS: tuple[str, ...] = ("order", "family", "genus")


def taxonomy_bytes() -> bytes:
    """The shipped JSON file's bytes (read through importlib.resources: works from a wheel or a checkout)."""
    return resources.files("bioclip_cli.data").joinpath(TAXONOMY_FILE).read_bytes()


@cache
def insect_taxonomy() -> dict[str, dict[str, str]]:
    """species -> {order, family, genus}; every rank present, missing ones ``not_classified``."""
    table = json.loads(taxonomy_bytes().decode("utf-8"))
    return {species: {rank: clean_rank(ranks.get(rank)) for rank in RANKS} for species, ranks in table.items()}


def taxonomy_columns(species: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({order, family, genus, species}: object arrays of str, known)`` for a species column.

    `known` [N] bool marks the species found in the table; the others get ``not_classified`` for the three
    ranks above species (their species string is kept as it is)."""
    table = insect_taxonomy()
    species = [str(s) for s in species]
    unknown = {rank: NOT_CLASSIFIED for rank in RANKS}
    rows = [table.get(s, unknown) for s in species]
    columns = {rank: np.array([r[rank] for r in rows], dtype=object) for rank in RANKS}
    columns["species"] = np.array([clean_rank(s) for s in species], dtype=object)
    known = np.fromiter((s in table for s in species), dtype=bool, count=len(species))
    return columns, known
