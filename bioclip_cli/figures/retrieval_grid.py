"""Retrieval examples: each query image beside its top-k keys, borders coloured by the taxonomic match.

As in the original (switched off in its code; docs/method.md, "Figures"): a species match has a dark green
border (#4C7C32), a genus match a light green one (#C4D050), anything else a thin grey one. Keys without an
image (image->DNA, image->text search) are drawn as a caption card: the key's taxonomy and similarity.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from bioclip_cli.figures.style import GENUS_MATCH, NO_MATCH, SPECIES_MATCH, new_figure, styled

MATCH_COLOURS = {"species": SPECIES_MATCH, "genus": GENUS_MATCH, "none": NO_MATCH}
UNKNOWN = "not_classified"


def match_level(query: dict, key: dict) -> str:
    """species, genus or none: the finest of the two levels on which query and key agree (known labels only)."""
    for level in ("species", "genus"):
        if query.get(level) not in ("", None, UNKNOWN) and query.get(level) == key.get(level):
            return level
    return "none"


@dataclass
class Tile:
    """One cell of the grid: a specimen's id, taxonomy, JPEG bytes (None: no image) and, for keys, the match."""

    sample_id: str
    taxonomy: dict
    image: bytes | None
    similarity: float | None = None
    match: str | None = None


def _caption(t: Tile) -> str:
    name = t.taxonomy.get("species") if t.taxonomy.get("species") not in ("", None, UNKNOWN) else None
    name = name or t.taxonomy.get("genus") or t.taxonomy.get("family") or "?"
    words = name.split()
    if len(words) == 2:  # Genus species -> G. species, so it fits under a tile
        name = f"{words[0][0]}. {words[1]}"
    return name if t.similarity is None else f"{name}\n{t.similarity:.3f}"


def _card(t: Tile) -> str:
    return "\n".join(str(t.taxonomy.get(level, "")) for level in ("order", "family", "genus", "species"))


def _pixels(data: bytes | None) -> np.ndarray | None:
    if not data:
        return None
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB")
        img.thumbnail((256, 256))
        return np.asarray(img)


def draw_retrieval_grid(rows: list[tuple[Tile, list[Tile]]], *, size: str, title: str):
    """One row per query: the query tile, then its keys in rank order."""
    n_rows = len(rows)
    n_cols = 1 + max((len(keys) for _, keys in rows), default=0)
    with styled(size) as lay:
        aspect = n_rows / n_cols * 1.18 + 0.08
        fig = new_figure(size, aspect)
        axes = fig.subplots(n_rows, n_cols, squeeze=False)
        border = 1.2 if size == "column" else 3.0
        small = lay.font * (0.62 if size == "column" else 0.8)
        for r, (query, keys) in enumerate(rows):
            for c in range(n_cols):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                tile = query if c == 0 else (keys[c - 1] if c - 1 < len(keys) else None)
                if tile is None:
                    ax.set_axis_off()
                    continue
                pixels = _pixels(tile.image)
                if pixels is not None:
                    ax.imshow(pixels, interpolation="antialiased")
                else:
                    ax.text(0.5, 0.5, _card(tile), ha="center", va="center", fontsize=small, transform=ax.transAxes)
                edge = "#000000" if c == 0 else MATCH_COLOURS[tile.match or "none"]
                width = border if c == 0 or tile.match != "none" else border / 2
                for spine in ax.spines.values():
                    spine.set_visible(True)
                    spine.set_edgecolor(edge)
                    spine.set_linewidth(width)
                ax.set_xlabel(_caption(tile), fontsize=small, labelpad=1)
                if c == 0:
                    ax.set_ylabel("query", fontsize=small)
                if r == 0 and c > 0:
                    ax.set_title(f"top-{c}", fontsize=small)
        fig.suptitle(title)
    return fig
