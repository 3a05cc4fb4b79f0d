"""`bioclip demo`: the whole method on the bundled sample, on a CPU, in minutes.

A pipeline, not a workflow (:mod:`bioclip_cli.pipelines`): one call of :func:`run_demo` does what a user
with real data does by hand, through the same workflow functions:

1. build the HDF5 from the sample's raw BIOSCAN-5M layout (:func:`~bioclip_cli.workflows.build_hdf5.build_5m`)
   into ``OUT/data/``;
2. embed and evaluate the *untrained* model: the `demo` preset's architecture with the random weights and
   seeded heads that training starts from (``OUT/baseline/``);
3. train the `demo` preset (:func:`~bioclip_cli.workflows.train.train`, run directory ``OUT``);
4. embed the query groups and the keys with the best checkpoint (``OUT/embeddings/``);
5. evaluate them (``OUT/results/eval_val.json``) and compare with the baseline.

``OUT`` is an ordinary run directory, so `bioclip eval --run OUT` and `bioclip predict --run OUT` work on
it. The demo's encoders are small: their operations are too short to gain from several CPU threads, and
on a busy machine threads that wait for each other made training ten times slower in our measurements, so
the demo runs torch on one intra-op thread by default (`threads`; restored afterwards).
``OUT/demo.json`` records the comparison, the timings and where every file went; its presence also
marks the folder as the demo's own, which is what lets ``overwrite=True`` delete it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bioclip_cli.atomic_write import write_text
from bioclip_cli.config import load_config
from bioclip_cli.config.schema import RunConfig
from bioclip_cli.errors import ConfigError
from bioclip_cli.retrieval.eval_result import EvalResult
from bioclip_cli.runs.run_dir import RunDir
from bioclip_cli.workflows.train import TrainEvents, TrainResult

DEMO_PRESET = "demo"
SUMMARY_FILE = "demo.json"
HDF5_NAME = "BIOSCAN_5M_sample.hdf5"
# The before/after table: (query, key) pairs and the levels shown, micro top-1, seen and unseen.
COMPARED: tuple[tuple[str, str], ...] = (("image", "image"), ("dna", "dna"), ("image", "dna"))
COMPARED_LEVELS: tuple[str, ...] = ("genus", "species")
STAGES = ("build the sample HDF5", "evaluate the untrained model", "train", "embed", "evaluate")


class DemoEvents(TrainEvents):
    """What the demo tells its caller: a stage starts or ends, plus everything training reports."""

    def stage(self, number: int, total: int, title: str) -> None:  # noqa: B027 - a no-op default on purpose
        pass

    def stage_done(self, title: str, seconds: float, detail: str) -> None:  # noqa: B027
        pass


@dataclass
class DemoResult:
    out: Path
    hdf5: Path
    config: RunConfig
    baseline: EvalResult  # evaluate_run result of the untrained model
    trained: EvalResult  # evaluate_run result of the trained model (best checkpoint)
    train: TrainResult
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, and "total"
    files: list[dict] = field(default_factory=list)  # {"what", "path"}

    def comparison_rows(self, percent: bool = True) -> list[dict]:
        """One row per (query, key) of :data:`COMPARED` and split: micro top-1 before and after, per level."""
        return comparison_rows(self.baseline, self.trained, percent=percent)

    def gain(self, query: str = "image", key: str = "dna", level: str = "genus") -> float:
        """Trained minus untrained micro top-1 at `level`, averaged over seen and unseen (fractions)."""
        return mean_top1(self.trained, query, key, level) - mean_top1(self.baseline, query, key, level)


def top1(result: EvalResult, query: str, key: str, split: str, level: str) -> float:
    """Micro top-1 accuracy (fraction) of one cell of an evaluation result."""
    return result.accuracy(query, key, split, "micro", 1, level)


def mean_top1(result: EvalResult, query: str, key: str, level: str) -> float:
    """Micro top-1 accuracy at `level`, the mean over the query splits present."""
    return result.mean_seen_unseen(query, key, "micro", 1, level)


def comparison_rows(before: EvalResult, after: EvalResult, percent: bool = True) -> list[dict]:
    """Rows `query, key, split, <level> before, <level> after, ...` for the demo's before/after table."""
    scale = 100.0 if percent else 1.0
    rows = []
    for query, key in COMPARED:
        if (query, key) not in before.combinations or (query, key) not in after.combinations:
            continue
        for split in ("seen", "unseen"):
            if split not in after.splits(query, key):
                continue
            row: dict = {"query": query, "key": key, "split": split}
            for level in COMPARED_LEVELS:
                b = top1(before, query, key, split, level) * scale
                a = top1(after, query, key, split, level) * scale
                row[f"{level} before"] = b
                row[f"{level} after"] = a
                row[f"{level} gain"] = a - b
            rows.append(row)
    return rows


def demo_config(
    out: Path, *, preset: str = DEMO_PRESET, epochs: int | None = None, sets: list[str] | tuple = ()
) -> RunConfig:
    """The demo's configuration: `preset` (+ `sets`), reading the HDF5 built into ``OUT/data/``."""
    hdf5 = (out / "data" / HDF5_NAME).resolve()
    extra = [f"data.hdf5={hdf5}"]
    if epochs is not None:
        extra.append(f"train.epochs={epochs}")
    cfg = load_config(preset, [], [*sets, *extra])
    if not cfg.train.enabled:
        raise ConfigError("train.enabled", f"the demo trains a model, but preset {preset!r} has training switched off")
    return cfg


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse to mix a new demo with an earlier run; with `overwrite`, delete only a folder the demo made."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError("out", f"{out} exists and is not a folder", "pass another --out")
    made_by_demo = (out / SUMMARY_FILE).is_file()
    if overwrite:
        if not made_by_demo and any(out.iterdir()):
            raise ConfigError(
                "out",
                f"{out} was not made by `bioclip demo` (it has no {SUMMARY_FILE}); refusing to delete it",
                "pass an empty or new --out folder",
            )
        shutil.rmtree(out)
        return
    if RunDir(out).has_checkpoints() or made_by_demo:
        raise ConfigError(
            "out",
            f"{out} already holds a demo run; it is kept",
            f"run the demo again with --overwrite, or into a new folder: bioclip demo --out {out}-2",
        )


def _write_summary(out: Path, summary: dict) -> None:
    path = out / SUMMARY_FILE
    write_text(path, json.dumps(summary, indent=2) + "\n")


def _files(out: Path, hdf5: Path) -> list[dict]:
    run = RunDir(out)
    baseline = RunDir(out / "baseline")
    candidates = [
        ("sample dataset (HDF5)", hdf5),
        ("build report", Path(str(hdf5) + ".report.json")),
        ("untrained model: embeddings", baseline.embeddings / "extracted_feature_from_val_split.hdf5"),
        ("untrained model: labels", baseline.embeddings / "labels_val.json"),
        ("untrained model: metrics", baseline.results / "eval_val.json"),
        ("resolved configuration", run.config),
        ("best checkpoint", run.best),
        ("last checkpoint", run.last),
        ("resumable training state", run.resume_state),
        ("training log", run.metrics),
        ("trained model: embeddings", run.embeddings / "extracted_feature_from_val_split.hdf5"),
        ("trained model: labels", run.embeddings / "labels_val.json"),
        ("trained model: metrics", run.results / "eval_val.json"),
        ("this summary", out / SUMMARY_FILE),
    ]
    return [{"what": what, "path": str(path)} for what, path in candidates if path.exists()]


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` for the block (None or 0: left as it is)."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_demo(
    out: str | Path = "runs/demo",
    *,
    epochs: int | None = None,
    preset: str = DEMO_PRESET,
    sets: list[str] | tuple = (),
    overwrite: bool = False,
    threads: int | None = 1,
    events: DemoEvents | None = None,
) -> DemoResult:
    """Build, evaluate untrained, train, embed, evaluate: the bundled sample end to end into run folder `out`.

    `epochs` overrides the preset's; `sets` are `--set`-style overrides (e.g. for a faster test run);
    `threads` is torch's intra-op thread count during the demo (None or 0: torch's default).
    """
    with torch_threads(threads):
        return _run_demo(Path(out), epochs, preset, sets, overwrite, events or DemoEvents())


def _run_demo(
    out: Path, epochs: int | None, preset: str, sets: list[str] | tuple, overwrite: bool, events: DemoEvents
) -> DemoResult:
    from bioclip_cli.data.sample import sample_root
    from bioclip_cli.workflows.build_hdf5 import build_5m
    from bioclip_cli.workflows.embed import EmbedPlan, embed, plan_embedding
    from bioclip_cli.workflows.evaluate import evaluate_run
    from bioclip_cli.workflows.train import train

    cfg = demo_config(out, preset=preset, epochs=epochs, sets=sets)  # a bad setting fails before any work
    _prepare_out(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    hdf5 = Path(cfg.data.hdf5)
    summary: dict = {"status": "running", "preset": preset, "config": str(RunDir(out).config)}
    _write_summary(out, summary)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    eval_options = {"ks": cfg.eval.k, "levels": cfg.eval.levels}
    total = len(STAGES)

    def begin(number: int) -> float:
        events.stage(number, total, STAGES[number - 1])
        return time.perf_counter()

    def done(number: int, t0: float, detail: str) -> None:
        seconds[STAGES[number - 1]] = time.perf_counter() - t0
        events.stage_done(STAGES[number - 1], seconds[STAGES[number - 1]], detail)

    t0 = begin(1)
    tokenizer = cfg.model.text.tokenizer if "text" in cfg.model.modalities else None
    report = build_5m(sample_root(), hdf5, text_tokenizer=tokenizer, text_max_len=cfg.data.text.max_len, overwrite=True)
    groups = ", ".join(f"{g} {n}" for g, n in report.groups.items())
    done(1, t0, f"{report.rows_written} specimens -> {hdf5} ({groups})")

    t0 = begin(2)
    baseline_dir = out / "baseline"
    plan = EmbedPlan(cfg, None, baseline_dir, "preset", f"untrained {cfg.name} model (random weights, seeded heads)")
    embed(plan)
    baseline = evaluate_run(baseline_dir, **eval_options)
    done(2, t0, f"image->DNA genus micro top-1 {100 * mean_top1(baseline, 'image', 'dna', 'genus'):.1f}%")

    t0 = begin(3)
    trained_run = train(cfg, out, events=events)
    rate = trained_run.samples_per_second
    done(3, t0, f"{trained_run.epochs} epochs, {trained_run.steps} steps, {rate:,.0f} samples/s")

    t0 = begin(4)
    embedded = embed(plan_embedding(run=out))
    done(4, t0, f"{sum(embedded.rows.values())} rows -> {embedded.h5_path}")

    t0 = begin(5)
    trained = evaluate_run(out, **eval_options)
    done(5, t0, f"image->DNA genus micro top-1 {100 * mean_top1(trained, 'image', 'dna', 'genus'):.1f}%")
    seconds["total"] = time.perf_counter() - start

    result = DemoResult(out, hdf5, cfg, baseline, trained, trained_run, seconds)
    summary.update(
        status="complete",
        epochs=trained_run.epochs,
        steps=trained_run.steps,
        best=trained_run.best,
        comparison=result.comparison_rows(percent=False),
        seconds={k: round(v, 2) for k, v in seconds.items()},
    )
    _write_summary(out, summary)
    from bioclip_cli.workflows.plot import demo_figures

    result.files = _files(out, hdf5) + demo_figures(out)
    summary["files"] = result.files
    _write_summary(out, summary)
    return result
