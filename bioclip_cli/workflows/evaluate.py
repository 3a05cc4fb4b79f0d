"""`bioclip eval`: find a run's (or the given) embedding files, call the evaluation engine, save the results.

The engine (sources, derived features, query/key combinations, search and metrics) is
:mod:`bioclip_cli.retrieval.evaluation`; this workflow only resolves paths and writes `results/eval_{split}.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

from bioclip_cli.atomic_write import write_text
from bioclip_cli.data.embedding_file import embedding_file_paths
from bioclip_cli.errors import BioclipError, DataError
from bioclip_cli.retrieval.eval_result import EvalResult
from bioclip_cli.retrieval.evaluation import evaluate_embeddings
from bioclip_cli.run_lock import run_lock
from bioclip_cli.runs.run_dir import RunDir, check_run_exists


def run_embedding_paths(run: str | Path, split: str = "val") -> tuple[Path, Path]:
    """The embedding file and labels of a run directory; errors say which runs or splits exist."""
    run = check_run_exists(run)
    embeddings = RunDir(run).embeddings
    h5_path, labels_path = embedding_file_paths(embeddings, split)
    for path in (h5_path, labels_path):
        if not path.is_file():
            others = sorted(p.name for p in embeddings.glob("extracted_feature_from_*_split.hdf5"))
            found = f" (it has: {', '.join(others)})" if others else ""
            flag = "" if split == "val" else f" --split {split}"
            raise DataError(
                path,
                f"{run} has no {split} embeddings: {path} is missing{found}",
                f"bioclip embed --run {run}{flag}",
            )
    return h5_path, labels_path


def run_results_path(run: str | Path, split: str = "val") -> Path:
    """Where `evaluate_run` keeps a run's results: `runs/NAME/results/eval_{split}.json`."""
    return RunDir(Path(run)).results / f"eval_{split}.json"


def evaluate_run(
    run: str | Path | None = None,
    embeddings: str | Path | None = None,
    labels: str | Path | None = None,
    *,
    split: str = "val",
    **options,
) -> EvalResult:
    """`bioclip eval`: evaluate a run's embeddings (and save `results/eval_{split}.json` in it) or a file pair.

    `options` are those of :func:`evaluate_embeddings`.
    """
    if run is not None and (embeddings is not None or labels is not None):
        raise BioclipError("give either --run or --embeddings/--labels, not both")
    if run is None:
        if embeddings is None or labels is None:
            raise BioclipError(
                "nothing to evaluate: give --run runs/NAME, or --embeddings FILE and --labels FILE",
                "bioclip eval --embeddings extracted_feature_from_val_split.hdf5 --labels labels_val.json",
            )
        return evaluate_embeddings(embeddings, labels, **options)
    embeddings, labels = run_embedding_paths(run, split)
    with run_lock(run, "bioclip eval"):  # no train or embed rewrites the run meanwhile
        result = evaluate_embeddings(embeddings, labels, **options)
        result.inputs.update(run=str(run), split=split)
        write_text(run_results_path(run, split), json.dumps(result.to_json(per_class=False), indent=2) + "\n")
    return result
