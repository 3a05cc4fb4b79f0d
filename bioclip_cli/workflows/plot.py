"""`bioclip plot`: find a run's inputs, call the figure engines (:mod:`bioclip_cli.figures`), write the files.

Every figure `FILE.png|pdf|svg` comes with `FILE.json`: the data it draws (points and their taxa for the map,
query and key ids with similarities for the retrieval grid, the curves, the accuracies), so a figure can be
checked and re-drawn elsewhere. Inputs come from a run directory: `config.yaml` (the dataset HDF5 for
images, the training group for class sizes), `embeddings/` (written by `bioclip embed`), `metrics.jsonl`
(written by `bioclip train`) and `results/eval_{split}.json` (written by `bioclip eval`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bioclip_cli.atomic_write import write_text
from bioclip_cli.config.schema import LEVELS, RunConfig
from bioclip_cli.data.embedding_file import EmbeddingFile, embedding_file_paths, read_embedding_file
from bioclip_cli.errors import BioclipError, DataError
from bioclip_cli.runs.run_dir import RunDir

QUERY_GROUPS = ("seen", "unseen")
MAP_MODALITIES = ("image", "dna", "text")
NOT_CLASSIFIED = "not_classified"


@dataclass
class PlotResult:
    figure: Path
    data: Path  # the JSON beside the figure
    record: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def data_path(figure: str | Path) -> Path:
    """`FILE.json` beside `FILE.png` (or .pdf, .svg)."""
    return Path(figure).with_suffix(".json")


def _save(fig, out: Path, size: str, record: dict, notes: list[str]) -> PlotResult:
    from bioclip_cli.figures.style import figure_format, save_figure

    figure_format(out)  # a wrong extension fails before anything is written
    save_figure(fig, out, size)
    record = {"figure": str(out), "size": size, **record}
    if notes:
        record["notes"] = notes
    write_text(data_path(out), json.dumps(record, indent=2) + "\n")
    return PlotResult(out, data_path(out), record, notes)


# ---------------------------------------------------------------------------------------------- inputs


def _run_config(run: Path) -> RunConfig:
    from bioclip_cli.config import load_run_config

    path = RunDir(run).config
    if not path.is_file():
        raise DataError(path, f"{run} is not a run directory: it has no config.yaml", "train one: bioclip demo")
    return load_run_config(path)


def open_embeddings(run: Path | None, embeddings: Path | None, labels: Path | None, split: str) -> EmbeddingFile:
    """The run's embedding file for `split`, or the given file pair."""
    if run is not None and (embeddings is not None or labels is not None):
        raise BioclipError("give either --run or --embeddings/--labels, not both")
    if run is None:
        if embeddings is None or labels is None:
            raise BioclipError(
                "nothing to draw: give --run runs/NAME, or --embeddings FILE and --labels FILE",
                "bioclip plot map --run runs/demo",
            )
        return read_embedding_file(embeddings, labels)
    if not Path(run).is_dir():
        raise DataError(run, f"run directory {run} does not exist", "train one first: bioclip demo")
    h5_path, labels_path = embedding_file_paths(RunDir(Path(run)).embeddings, split)
    if not h5_path.is_file():
        raise DataError(
            h5_path, f"{run} has no {split} embeddings ({h5_path} is missing)", f"bioclip embed --run {run}"
        )
    return read_embedding_file(h5_path, labels_path)


def parse_within(text: str | None) -> dict[str, str]:
    """`order=Diptera,family=Sciaridae` -> {"order": "Diptera", "family": "Sciaridae"}."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        level, sep, value = part.partition("=")
        level, value = level.strip(), value.strip()
        if not sep or level not in LEVELS or not value:
            raise BioclipError(
                f"--within {text!r}: {part.strip()!r} is not LEVEL=NAME with LEVEL one of {', '.join(LEVELS)}",
                "e.g. --within order=Diptera,family=Sciaridae",
            )
        out[level] = value
    return out


def filter_rows(labels: dict[str, np.ndarray], within: dict[str, str], level: str, top: int) -> tuple[np.ndarray, list]:
    """Rows inside `within` whose `level` label is one of the `top` most frequent there (ties by name).

    Returns (row indices, [(taxon, count), ...] most frequent first)."""
    if level not in labels:
        raise BioclipError(f"the labels have no level {level!r}", f"use one of: {', '.join(labels)}")
    mask = np.ones(len(labels[level]), dtype=bool)
    for lv, value in within.items():
        if lv not in labels:
            raise BioclipError(f"--within: the labels have no level {lv!r}", f"use one of: {', '.join(labels)}")
        inside = mask & (labels[lv] == value)
        if not inside.any():
            common = [name for name, _ in Counter(labels[lv][mask]).most_common(5)]
            raise BioclipError(
                f"--within {lv}={value}: no query has that {lv}",
                f"the most frequent there: {', '.join(common) or 'none'}",
            )
        mask = inside
    mask &= labels[level] != NOT_CLASSIFIED
    counts = Counter(labels[level][mask])
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: max(top, 1)]
    chosen = {name for name, _ in ranked}
    rows = np.flatnonzero(mask & np.isin(labels[level], list(chosen)))
    return rows, ranked


# ------------------------------------------------------------------------------------------------- map


def plot_map(
    out: str | Path,
    *,
    run: Path | None = None,
    embeddings: Path | None = None,
    labels: Path | None = None,
    split: str = "val",
    group: str = "seen",
    within: str | None = None,
    level: str = "species",
    top: int = 10,
    method: str | None = None,
    modalities: Sequence[str] = MAP_MODALITIES,
    seed: int = 0,
    size: str = "screen",
) -> PlotResult:
    """2-D map of `group`'s embeddings (every modality in `modalities` the file has), one colour per taxon."""
    from bioclip_cli.figures.embedding_map import draw_map, project, umap_available
    from bioclip_cli.figures.style import figure_format, layout

    figure_format(out)
    layout(size)
    notes: list[str] = []
    if method is None:
        method = "umap" if umap_available() else "pca"
        if method == "pca":
            notes.append(
                'umap-learn is not installed, so the map is a PCA (pip install "bioscan-clip[plots]" for UMAP)'
            )
    with open_embeddings(run, embeddings, labels, split) as ef:
        if group not in ef.groups:
            raise DataError(
                ef.h5_path, f"{ef.h5_path.name} has no {group!r} group", f"use one of: {', '.join(ef.groups)}"
            )
        rows, ranked = filter_rows(ef.labels[group], parse_within(within), level, top)
        present = [m for m in modalities if ef.has(group, m)]
        if not present:
            raise DataError(ef.h5_path, f"the {group} group has none of the features {', '.join(modalities)}")
        widths = {ef.dataset(group, m).shape[1] for m in present}
        if len(widths) > 1:
            raise DataError(
                ef.h5_path, f"the {', '.join(present)} embeddings differ in width: one map cannot hold them"
            )
        vectors = np.concatenate([ef.dataset(group, m)[()][rows] for m in present])
        taxa = np.tile(ef.labels[group][level][rows], len(present))
        mods = np.repeat(np.array(present), len(rows))
        ids = ef.sample_ids.get(group)
        ids = [str(ids[r]) for r in rows] if ids is not None else [f"row {r}" for r in rows]
    xy = project(vectors, method, seed)
    where = ", ".join(f"{k}={v}" for k, v in parse_within(within).items())
    rows_name = f"{split} keys" if group == "key" else f"{group} {split} queries"
    title = f"{rows_name}{' in ' + where if where else ''}: top {len(ranked)} {level}"
    fig = draw_map(xy, taxa, mods, order=[name for name, _ in ranked], size=size, title=title, method=method)
    points = [
        {"id": ids[i % len(rows)], "taxon": str(taxa[i]), "modality": str(mods[i]),
         "x": round(float(xy[i, 0]), 6), "y": round(float(xy[i, 1]), 6)}
        for i in range(len(xy))
    ]  # fmt: skip
    record = {
        "kind": "map", "method": method, "seed": seed, "split": split, "group": group, "within": parse_within(within),
        "level": level, "top": top, "taxa": [{"taxon": t, "rows": n} for t, n in ranked], "modalities": present,
        "n_rows": int(len(rows)), "n_points": len(points), "points": points,
    }  # fmt: skip
    return _save(fig, Path(out), size, record, notes)


# ------------------------------------------------------------------------------------------- retrieval


def _dataset_rows(cfg: RunConfig | None, split: str, group: str, notes: list[str]):
    """(BioscanH5 group reader of the queries, of the keys, id -> row maps) or None when the HDF5 is absent."""
    if cfg is None:
        return None
    from bioclip_cli.data.hdf5 import BioscanH5

    path = Path(cfg.data.hdf5)
    if not path.is_file():
        notes.append(f"the run's dataset {path} is not there: tiles show taxonomy instead of images")
        return None
    seen, unseen = cfg.data.val_groups if split == "val" else cfg.data.test_groups
    h5 = BioscanH5(path)
    readers = {"query": h5.group(seen if group == "seen" else unseen), "key": h5.group(cfg.data.key_group)}
    index = {role: {sid: i for i, sid in enumerate(r.sample_ids())} for role, r in readers.items()}
    return h5, readers, index


def _choose_queries(ids: np.ndarray | None, n_rows: int, wanted: Sequence[str] | None, n: int, seed: int) -> list[int]:
    if wanted:
        if ids is None:
            raise BioclipError("--ids needs an embedding file with sample ids (ours); this one has none")
        where = {str(s): i for i, s in enumerate(ids)}
        unknown = [w for w in wanted if w not in where]
        if unknown:
            raise BioclipError(
                f"--ids: {', '.join(unknown)} not among the queries", f"e.g. --ids {','.join(map(str, ids[:3]))}"
            )
        return [where[w] for w in wanted]
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n_rows, size=min(n, n_rows), replace=False))


def plot_retrieval(
    out: str | Path,
    *,
    run: Path,
    split: str = "val",
    group: str = "seen",
    query: str = "image",
    key: str = "image",
    n: int = 5,
    k: int = 5,
    ids: Sequence[str] | None = None,
    seed: int = 0,
    size: str = "screen",
) -> PlotResult:
    """A grid of `n` queries (seeded choice, or `ids`) and their top-`k` keys, searched as `bioclip eval` does."""
    from bioclip_cli.figures.retrieval_grid import Tile, draw_retrieval_grid, match_level
    from bioclip_cli.figures.style import figure_format, layout
    from bioclip_cli.retrieval.search import FlatIndex

    figure_format(out)
    layout(size)
    if group not in QUERY_GROUPS:
        raise BioclipError(f"--group must be seen or unseen, got {group!r}")
    if key == "all":
        raise BioclipError("--key all stacks three keys per specimen; pick image, dna or text for the grid")
    if n < 1 or k < 1:
        raise BioclipError(f"--n and --k must be positive, got {n} and {k}")
    notes: list[str] = []
    cfg = _run_config(Path(run))
    with open_embeddings(Path(run), None, None, split) as ef:
        q_all = ef.dataset(group, query)[()]
        keys = ef.dataset("key", key)[()]
        if q_all.shape[1] != keys.shape[1]:
            raise DataError(
                ef.h5_path, f"{query} queries ({q_all.shape[1]}) and {key} keys ({keys.shape[1]}) differ in width"
            )
        if len(keys) < k:
            raise DataError(ef.h5_path, f"top-{k} needs at least {k} keys, the key group has {len(keys)}")
        q_ids, k_ids = ef.sample_ids.get(group), ef.sample_ids.get("key")
        rows = _choose_queries(q_ids, len(q_all), ids, n, seed)
        q_labels, k_labels = ef.labels[group], ef.labels["key"]
    scores, neighbours = FlatIndex(keys, device="cpu").search(q_all[rows], k)
    dataset = _dataset_rows(cfg, split, group, notes) if q_ids is not None else None

    def taxonomy(labels: dict, i: int) -> dict:
        return {lv: str(labels[lv][i]) for lv in labels}

    def image(role: str, sid: str | None) -> bytes | None:
        if dataset is None or sid is None or sid not in dataset[2][role]:
            return None
        return dataset[1][role].image_bytes(dataset[2][role][sid])

    grid, examples = [], []
    try:
        for qi, (row, found, sims) in enumerate(zip(rows, neighbours, scores)):
            q_sid = str(q_ids[row]) if q_ids is not None else None
            q_tax = taxonomy(q_labels, row)
            tiles, drawn = [], []
            for ki, sim in zip(found, sims):
                k_sid = str(k_ids[ki]) if k_ids is not None else None
                k_tax = taxonomy(k_labels, int(ki))
                match = match_level(q_tax, k_tax)
                tiles.append(Tile(k_sid or f"row {ki}", k_tax, image("key", k_sid) if key == "image" else None,
                                  float(sim), match))  # fmt: skip
                drawn.append({"key_id": k_sid, "key_row": int(ki), "similarity": float(sim), "match": match,
                              "taxonomy": k_tax})  # fmt: skip
            grid.append((Tile(q_sid or f"row {row}", q_tax, image("query", q_sid)), tiles))
            examples.append({"query_id": q_sid, "query_row": int(row), "taxonomy": q_tax, "keys": drawn})
    finally:
        if dataset is not None:
            dataset[0].close()
    title = f"{query} -> {key} retrieval, {group} {split} queries (border: species / genus match)"
    fig = draw_retrieval_grid(grid, size=size, title=title)
    record = {"kind": "retrieval", "run": str(run), "split": split, "group": group, "query": query, "key": key,
              "k": k, "seed": seed, "examples": examples}  # fmt: skip
    return _save(fig, Path(out), size, record, notes)


# ---------------------------------------------------------------------------------------------- curves


def read_metrics(run: Path) -> list[dict]:
    path = RunDir(Path(run)).metrics
    if not path.is_file():
        raise DataError(path, f"{run} has no metrics.jsonl (is it a training run?)", "bioclip train --preset demo")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise DataError(path, f"{path} line {n} is not JSON") from None
    if not any(r.get("type") == "train" for r in records):
        raise DataError(path, f"{path} holds no training records yet")
    return records


def plot_curves(
    out: str | Path,
    *,
    runs: Sequence[Path],
    query: str = "image",
    key: str = "dna",
    levels: Sequence[str] = ("genus", "species"),
    size: str = "screen",
) -> PlotResult:
    """Loss, learning rate, temperature and per-epoch micro top-1 of `query|key`, the runs overlaid."""
    from bioclip_cli.figures.curves import curve_series, draw_curves
    from bioclip_cli.figures.style import figure_format, layout

    figure_format(out)
    layout(size)
    if not runs:
        raise BioclipError("give at least one --run")
    combo = f"{query}|{key}"
    series: dict[str, dict] = {}
    for run in runs:
        name = Path(run).name if Path(run).name not in series else str(run)
        series[name] = curve_series(read_metrics(Path(run)), combo, levels)
    notes = [f"{name} has no {combo} evaluations" for name, s in series.items() if not s["accuracy"]]
    title = "training" if len(series) == 1 else f"training: {', '.join(series)}"
    fig = draw_curves(
        series, combo=combo, size=size, title=f"{title} ({next(iter(series))})" if len(series) == 1 else title
    )
    record = {
        "kind": "curves",
        "runs": [str(r) for r in runs],
        "combo": combo,
        "levels": list(levels),
        "series": series,
    }
    return _save(fig, Path(out), size, record, notes)


# -------------------------------------------------------------------------------------------- accuracy


def _train_counts(cfg: RunConfig, level: str, notes: list[str]) -> Counter | None:
    from bioclip_cli.data.hdf5 import BioscanH5

    path = Path(cfg.data.hdf5)
    if not path.is_file():
        notes.append(f"the run's dataset {path} is not there: no training counts for the long-tail panel")
        return None
    with BioscanH5(path) as h5:
        if not h5.has_group(cfg.data.train_group):
            notes.append(f"{path} has no training group {cfg.data.train_group}")
            return None
        return Counter(h5.group(cfg.data.train_group).taxonomy()[level])


def plot_accuracy(
    out: str | Path,
    *,
    run: Path,
    split: str = "val",
    pairs: Sequence[tuple[str, str]] = (("image", "image"), ("dna", "dna"), ("image", "dna")),
    levels: Sequence[str] = LEVELS,
    per_class: bool = False,
    tail_level: str = "species",
    size: str = "screen",
) -> PlotResult:
    """Top-1 per level, seen vs unseen, per (query, key) pair; with `per_class`, accuracy against class size."""
    from bioclip_cli.figures.accuracy import draw_accuracy, level_bars
    from bioclip_cli.figures.style import figure_format, layout
    from bioclip_cli.retrieval.evaluation import evaluate_embeddings

    figure_format(out)
    layout(size)
    notes: list[str] = []
    combos = [f"{q}|{k}" for q, k in pairs]
    saved = Path(run) / "results" / f"eval_{split}.json"
    result = json.loads(saved.read_text()) if saved.is_file() else None
    usable = (
        result is not None
        and all(c in result.get("results", {}) for c in combos)
        and all(lv in result.get("levels", []) for lv in levels)
    )
    source = str(saved)
    if not usable or per_class:
        wanted_levels = list(dict.fromkeys([*levels, tail_level])) if per_class else list(levels)
        with open_embeddings(Path(run), None, None, split) as ef:
            result = evaluate_embeddings(
                ef,
                queries=list(dict.fromkeys(q for q, _ in pairs)),
                keys=list(dict.fromkeys(k for _, k in pairs)),
                ks=[1],
                levels=wanted_levels,
                per_class=per_class,
            ).to_json()  # fmt: skip  (the saved results' JSON shape, which the figures read)
        source = "evaluated from the run's embeddings"
    missing = [c for c in combos if c not in result["results"]]
    if missing:
        raise DataError(Path(run), f"no results for {', '.join(missing)} (features of different widths?)")
    bars = level_bars(result, combos, levels)
    tail = None
    if per_class:
        counts = _train_counts(_run_config(Path(run)), tail_level, notes) or Counter()
        tail = [
            {"split": r["split"], "class": r["class"], "n_queries": r["n_queries"], "top-1": r["top-1"],
             "n_train": int(counts.get(r["class"], 0))}
            for r in result["per_class"]
            if f"{r['query']}|{r['key']}" == combos[0] and r["level"] == tail_level
        ]  # fmt: skip
    fig = draw_accuracy(bars, levels, size=size, title=f"top-1 accuracy, {split} queries ({Path(run).name})",
                        long_tail=tail, long_tail_level=f"{tail_level} ({combos[0].replace('|', ' -> ')})")  # fmt: skip
    record = {"kind": "accuracy", "run": str(run), "split": split, "source": source, "levels": list(levels),
              "bars": bars}  # fmt: skip
    if tail is not None:
        record["per_class"] = {"combo": combos[0], "level": tail_level, "classes": tail}
    return _save(fig, Path(out), size, record, notes)


# ------------------------------------------------------------------------------------------------ demo


def demo_figures(run: str | Path, size: str = "screen") -> list[dict]:
    """The demo's figures in `run/figures/`: map (of the keys, by genus: the sample's val queries are too few for
    a map), retrieval grid, curves. Returns [{"what", "path"}]."""
    folder = Path(run) / "figures"
    made = [
        ("figure: embedding map", plot_map(folder / "map.png", run=Path(run), group="key", level="genus", size=size)),
        ("figure: retrieval examples", plot_retrieval(folder / "retrieval.png", run=Path(run), size=size)),
        ("figure: training curves", plot_curves(folder / "curves.png", runs=[Path(run)], size=size)),
    ]
    return [{"what": what, "path": str(result.figure)} for what, result in made]
