"""Accuracy charts: top-1 per taxonomic level, seen vs unseen (the paper's bar charts), and the long tail.

The long-tail panel puts every query class at (its number of training specimens, its top-1 accuracy):
classes with few training specimens, and unseen species with none, are where retrieval is hardest.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bioclip_cli.figures.style import SEEN_COLOUR, UNSEEN_COLOUR, new_figure, styled

SPLIT_COLOURS = {"seen": SEEN_COLOUR, "unseen": UNSEEN_COLOUR}


def level_bars(result: dict, combos: Sequence[str], levels: Sequence[str], average: str = "micro") -> dict:
    """{combo: {split: [top-1 per level]}} from an evaluation result (fractions)."""
    out = {}
    for combo in combos:
        cell = result["results"][combo]
        out[combo] = {
            split: [float(cell[split][average]["1"][lv]) for lv in levels] for split in SPLIT_COLOURS if split in cell
        }
    return out


def draw_accuracy(
    bars: dict,
    levels: Sequence[str],
    *,
    size: str,
    title: str,
    long_tail: list[dict] | None = None,
    long_tail_level: str = "species",
):
    """One bar panel per (query|key) combination; with `long_tail` rows ({split, class, n_train, top-1}) a last
    panel of per-class accuracy against training specimens."""
    panels = len(bars) + (1 if long_tail is not None else 0)
    with styled(size):
        cols = min(panels, 2 if size == "column" else 3)
        rows = -(-panels // cols)
        fig = new_figure(size, (0.62 if size == "column" else 0.36) * rows * (2 / cols if size == "column" else 1))
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
        x = np.arange(len(levels))
        width = 0.38
        for ax, (combo, per_split) in zip(axes, bars.items()):
            for j, (split, values) in enumerate(per_split.items()):
                offset = (j - (len(per_split) - 1) / 2) * width
                ax.bar(x + offset, [100 * v for v in values], width, color=SPLIT_COLOURS[split], label=split)
            ax.set_xticks(x, list(levels))
            ax.set_ylim(0, 100)
            ax.set_title(combo.replace("|", " -> "))
            ax.set_ylabel("micro top-1 (%)")
        axes[0].legend(frameon=False)
        if long_tail is not None:
            ax = axes[len(bars)]
            for split, c in SPLIT_COLOURS.items():
                pts = [r for r in long_tail if r["split"] == split]
                if pts:
                    ax.scatter(
                        [r["n_train"] for r in pts], [100 * r["top-1"] for r in pts], color=c, alpha=0.7,
                        s=10 if size == "column" else 25, linewidths=0, label=split,
                    )  # fmt: skip
            ax.set_xscale("symlog", linthresh=1)
            ax.set_ylim(-5, 105)
            ax.set(title=f"per {long_tail_level}", xlabel="training specimens", ylabel="top-1 (%)")
            ax.legend(frameon=False)
        for ax in axes[panels:]:
            ax.set_axis_off()
        fig.suptitle(title)
    return fig
