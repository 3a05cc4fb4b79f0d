"""The embedding map: query embeddings of several modalities projected to 2-D, one colour per taxon.

The original's map (switched off in its code) is a UMAP of the seen queries' image, DNA and text embeddings
(cosine metric, min_dist 0.5, random_state 0), filtered by a parent taxon and limited to the most frequent
taxa; docs/method.md, "Figures". UMAP comes from `umap-learn` (the `plots` extra), t-SNE from scikit-learn
when installed; PCA is two lines of numpy (an SVD), so the map works with neither.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np

from bioclip_cli.errors import BioclipError
from bioclip_cli.figures.style import colour, new_figure, styled

METHODS: tuple[str, ...] = ("umap", "pca", "tsne")
MODALITY_MARKERS = {"image": "o", "dna": "^", "text": "s"}
MODALITY_ALPHA = {"image": 0.85, "dna": 0.55, "text": 0.35}
UMAP_MIN_DIST = 0.5
UMAP_METRIC = "cosine"


class MissingExtra(BioclipError):
    """An optional package that a figure method needs is not installed."""


def _import(module: str, method: str, install: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(
            f"--method {method} needs the {module} package, which is not installed",
            f"install it with `{install}`, or use `--method pca`, which needs nothing extra",
        ) from None


def umap_available() -> bool:
    """True when `import umap` works (umap-learn is installed and imports cleanly)."""
    try:
        importlib.import_module("umap")
    except ImportError:
        return False
    return True


def project(vectors: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """[n, d] embeddings (L2-normalised here) -> [n, 2] map coordinates, deterministic for a fixed `seed`."""
    if method not in METHODS:
        raise BioclipError(f"unknown map method {method!r}", f"use one of: {', '.join(METHODS)}")
    x = np.asarray(vectors, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    if n < 3:
        raise BioclipError(f"the map needs at least 3 points, the filter left {n}", "widen --within or raise --top")
    if method == "pca":
        centred = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        axes = vt[:2]
        axes *= np.sign(axes[np.arange(2), np.abs(axes).argmax(axis=1)])[:, None]  # a fixed sign per axis
        return centred @ axes.T
    if method == "umap":
        umap = _import("umap", "umap", 'pip install "bioscan-clip[plots]"')
        reducer = umap.UMAP(
            n_components=2, metric=UMAP_METRIC, min_dist=UMAP_MIN_DIST, random_state=seed,
            n_neighbors=min(15, n - 1),
        )  # fmt: skip
        with warnings.catch_warnings():  # "n_jobs overridden to 1 by setting random_state": the price of a seed
            warnings.simplefilter("ignore", UserWarning)
            return np.asarray(reducer.fit_transform(x), dtype=np.float64)
    manifold = _import("sklearn.manifold", "tsne", "pip install scikit-learn")
    tsne = manifold.TSNE(
        n_components=2, metric="cosine", init="pca", random_state=seed, perplexity=min(30.0, (n - 1) / 3)
    )
    return np.asarray(tsne.fit_transform(x), dtype=np.float64)


def draw_map(
    xy: np.ndarray,
    taxa: np.ndarray,
    modalities: np.ndarray,
    *,
    order: list[str],
    size: str,
    title: str,
    method: str,
):
    """Scatter `xy` coloured by taxon (`order`: legend order, most frequent first), marker and shade by modality."""
    with styled(size):
        fig = new_figure(size, 0.8 if size == "column" else 0.62)
        ax = fig.add_subplot()
        for i, taxon in enumerate(order):
            for modality, marker in MODALITY_MARKERS.items():
                sel = (taxa == taxon) & (modalities == modality)
                if sel.any():
                    ax.scatter(
                        xy[sel, 0], xy[sel, 1], c=colour(i), marker=marker, alpha=MODALITY_ALPHA[modality],
                        s=12 if size == "column" else 30, linewidths=0,
                    )  # fmt: skip
        taxon_handles = [
            ax.scatter([], [], c=colour(i), marker="o", label=_short(taxon)) for i, taxon in enumerate(order)
        ]
        present = [m for m in MODALITY_MARKERS if (modalities == m).any()]
        modality_handles = [
            ax.scatter([], [], c="#555555", marker=MODALITY_MARKERS[m], alpha=MODALITY_ALPHA[m], label=m.upper())
            for m in present
        ]
        first = ax.legend(handles=taxon_handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.add_artist(first)
        ax.legend(handles=modality_handles, loc="lower left", bbox_to_anchor=(1.01, 0.0), frameon=False)
        ax.set_title(title)
        ax.set_xlabel(f"{method.upper()} 1")
        ax.set_ylabel(f"{method.upper()} 2")
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def _short(name: str, limit: int = 28) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"
