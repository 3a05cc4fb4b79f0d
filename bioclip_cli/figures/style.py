"""Sizes, fonts, the colour-blind-safe palette, and saving a figure (PNG, PDF or SVG by extension).

Figures are built on `matplotlib.figure.Figure` directly, never through pyplot, so no GUI backend is ever
touched (the Agg canvas renders PNG; PDF and SVG have their own). Two sizes: ``column`` (a paper column,
3.5 in wide at 300 dpi, 7-pt text) and ``screen`` (10 in at 100 dpi, 11-pt text). The palette is
Okabe & Ito's (distinguishable with the common colour-vision deficiencies), extended by two of Paul Tol's.
Saved files are byte-stable for the same input: PDF and SVG get no creation date, SVG a fixed id salt.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bioclip_cli.atomic_write import atomic_output
from bioclip_cli.errors import BioclipError

Size = Literal["column", "screen"]
SIZES: tuple[str, ...] = ("column", "screen")
FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
PALETTE: tuple[str, ...] = (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000", "#882255", "#999999",
)  # fmt: skip
SPECIES_MATCH = "#4C7C32"  # the original's border colours for retrieval examples
GENUS_MATCH = "#C4D050"
NO_MATCH = "#BBBBBB"
SEEN_COLOUR, UNSEEN_COLOUR = PALETTE[0], PALETTE[1]


@dataclass(frozen=True)
class Layout:
    width: float  # inches
    dpi: int
    font: float  # points

    def inches(self, aspect: float) -> tuple[float, float]:
        """(width, height) for a height/width `aspect`."""
        return self.width, round(self.width * aspect, 3)

    def pixels(self, aspect: float) -> tuple[int, int]:
        w, h = self.inches(aspect)
        return round(w * self.dpi), round(h * self.dpi)


LAYOUTS: dict[str, Layout] = {"column": Layout(3.5, 300, 7.0), "screen": Layout(10.0, 100, 11.0)}


def layout(size: str) -> Layout:
    if size not in LAYOUTS:
        raise BioclipError(f"unknown figure size {size!r}", f"use one of: {', '.join(SIZES)}")
    return LAYOUTS[size]


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def figure_format(path: str | Path) -> str:
    """png, pdf or svg from the file's extension; one sentence otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise BioclipError(
            f"cannot tell the figure format of {path} (extension {suffix or 'none'!r})",
            "end --out with .png, .pdf or .svg",
        )
    return FORMATS[suffix]


@contextmanager
def styled(size: str) -> Iterator[Layout]:
    """matplotlib rc settings for `size` while a figure is built (fonts, line widths, no top/right spines)."""
    import matplotlib

    lay = layout(size)
    scale = lay.font / 10.0
    rc = {
        "font.size": lay.font,
        "axes.titlesize": lay.font,
        "axes.labelsize": lay.font,
        "xtick.labelsize": lay.font * 0.9,
        "ytick.labelsize": lay.font * 0.9,
        "legend.fontsize": lay.font * 0.85,
        "lines.linewidth": 1.5 * scale,
        "lines.markersize": 5 * scale,
        "axes.linewidth": 0.8 * scale,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.prop_cycle": matplotlib.cycler(color=list(PALETTE)),
        "svg.hashsalt": "bioscan-clip",
        "figure.dpi": lay.dpi,
    }
    with matplotlib.rc_context(rc):
        yield lay


def new_figure(size: str, aspect: float):
    """A constrained-layout Figure of `size` (column or screen) with height/width `aspect`."""
    from matplotlib.figure import Figure

    lay = layout(size)
    return Figure(figsize=lay.inches(aspect), dpi=lay.dpi, layout="constrained")


def save_figure(fig, path: str | Path, size: str) -> Path:
    """Write `fig` to `path` (format from the extension) through the atomic writer; returns the path."""
    fmt = figure_format(path)
    metadata = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}, "svg": {"Date": None}}
    with styled(size) as lay, atomic_output(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=lay.dpi, metadata=metadata[fmt])
    return Path(path)
