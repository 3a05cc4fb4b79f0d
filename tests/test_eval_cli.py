"""`bioclip eval` through the installed script: outputs, run directories and every error path."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import run_cli

from bioclip_cli.data.embedding_file import write_embedding_file
from bioclip_cli.retrieval.evaluation import evaluate_embeddings

LEVELS = ("order", "family", "genus", "species")


def _files(root, split="val", nan=False, seed=0):
    rng = np.random.default_rng(seed)
    feats, labels = {}, {}
    for group, rows in (("seen", 30), ("unseen", 20), ("key", 50)):
        feats[group] = {m: rng.standard_normal((rows, 8)).astype(np.float32) for m in ("image", "dna", "text")}
        species = rng.integers(0, 9, rows)
        labels[group] = {lv: [f"{lv}{s % (i + 2)}" for s in species] for i, lv in enumerate(LEVELS)}
    if nan:
        feats["unseen"]["dna"][4] = np.nan
    return write_embedding_file(root / "runs" / "r1" / "embeddings", split, feats, labels)


def _one_error_line(proc):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_eval_files_writes_json_csv_and_per_class(tmp_path):
    h5_path, labels_path = _files(tmp_path)
    out = tmp_path / "out"
    proc = run_cli(
        "eval", "--embeddings", str(h5_path), "--labels", str(labels_path), "--k", "1,5",
        "--json", str(out / "r.json"), "--csv", str(out / "r.csv"), "--per-class", str(out / "pc.csv"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Top-k accuracy (%)" in proc.stdout and "concat" in proc.stdout
    result = json.loads((out / "r.json").read_text())
    expected = json.loads(json.dumps(evaluate_embeddings(h5_path, labels_path, ks=(1, 5)).to_json()))
    assert result["results"] == expected["results"]
    assert len(result["results"]) == 21 and result["k"] == [1, 5]
    assert set(result) == {"results", "k", "levels", "n_queries", "n_keys", "inputs"}
    rows = list(csv.DictReader((out / "r.csv").open()))
    assert len(rows) == 21 * 2 * 2
    assert rows[0]["query"] == "image" and rows[0]["key"] == "image" and rows[0]["metric"] == "micro"
    assert float(rows[0]["seen species"]) == result["results"]["image|image"]["seen"]["micro"]["1"]["species"]
    per_class = list(csv.DictReader((out / "pc.csv").open()))
    assert list(per_class[0]) == ["query", "key", "split", "level", "class", "n_queries", "top-1", "top-5"]
    seen_order = [
        r
        for r in per_class
        if r["query"] == "image" and r["key"] == "dna" and r["split"] == "seen" and r["level"] == "order"
    ]
    assert sum(int(r["n_queries"]) for r in seen_order) == 30


def test_eval_run_with_chosen_pairs_saves_results(tmp_path):
    _files(tmp_path, split="test")
    run = tmp_path / "runs" / "r1"
    proc = run_cli("eval", "--run", str(run), "--split", "test", "--query", "image", "--key", "dna", "--key", "all",
                   "--levels", "genus,species")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((run / "results" / "eval_test.json").read_text())
    assert list(saved["results"]) == ["image|dna", "image|all"]
    assert saved["levels"] == ["genus", "species"]
    assert "saved" in proc.stderr and "eval_test.json" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval"], "nothing to evaluate"),
        (
            ["eval", "--run", "{root}/runs/nope"],
            "run directory {root}/runs/nope does not exist (runs in {root}/runs/: r1)",
        ),
        (["eval", "--run", "{root}/runs/r1", "--split", "test"], "has no test embeddings"),
        (
            ["eval", "--run", "{root}/runs/r1", "--k", "1,x"],
            "--k '1,x' is not a comma-separated list of positive integers",
        ),
        (["eval", "--run", "{root}/runs/r1", "--query", "wings"], "--query 'wings' is not a feature name"),
        (["eval", "--run", "{root}/runs/r1", "--levels", "kingdom"], "no level(s) kingdom"),
        (["eval", "--run", "{root}/runs/r1", "--query", "dna"], "unseen/encoded_dna_feature: 1 of 20 rows hold NaN"),
        (["eval", "--embeddings", "{root}/x.hdf5", "--labels", "{root}/x.json"], "does not exist"),
        (["eval", "--run", "{root}/runs/r1", "--device", "tpu"], "unknown search device 'tpu'"),
    ],
)
def test_eval_errors_are_one_line(tmp_path, args, message):
    _files(tmp_path, nan=True)
    root = str(tmp_path)
    proc = run_cli(*(a.format(root=root) for a in args))
    assert message.format(root=root) in _one_error_line(proc)
