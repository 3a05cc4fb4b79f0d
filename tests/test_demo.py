"""`bioclip demo`: the bundled sample end to end, its before/after comparison and its run directory."""

from __future__ import annotations

import json

import pytest
from conftest import DEMO_TEST_EPOCHS, run_cli

from bioclip_cli.errors import ConfigError
from bioclip_cli.pipelines.demo import (
    SUMMARY_FILE,
    _prepare_out,
    comparison_rows,
    demo_config,
    mean_top1,
    torch_threads,
)
from bioclip_cli.retrieval.eval_result import EvalResult


def _result(cells: dict[tuple[str, str], tuple[float, float]]) -> EvalResult:
    """An evaluate result with micro top-1 genus/species = the given (seen, unseen) per combination."""
    scores = {}
    for pair, (seen, unseen) in cells.items():
        scores[pair] = {
            split: {"micro": {1: {"genus": v, "species": v / 2}}} for split, v in (("seen", seen), ("unseen", unseen))
        }
    return EvalResult(scores, [1], ["genus", "species"], {"seen": 1, "unseen": 1}, 1, {})


def test_comparison_rows_and_gain_values():
    before = _result({("image", "image"): (0.25, 0.5), ("dna", "dna"): (0.5, 0.5), ("image", "dna"): (0.0, 0.25)})
    after = _result({("image", "image"): (0.75, 0.5), ("dna", "dna"): (1.0, 0.75), ("image", "dna"): (0.5, 0.25)})
    rows = comparison_rows(before, after, percent=True)
    assert [(r["query"], r["key"], r["split"]) for r in rows] == [
        ("image", "image", "seen"), ("image", "image", "unseen"), ("dna", "dna", "seen"), ("dna", "dna", "unseen"),
        ("image", "dna", "seen"), ("image", "dna", "unseen"),
    ]  # fmt: skip
    assert rows[0] == {
        "query": "image", "key": "image", "split": "seen",
        "genus before": 25.0, "genus after": 75.0, "genus gain": 50.0,
        "species before": 12.5, "species after": 37.5, "species gain": 25.0,
    }  # fmt: skip
    assert rows[5]["genus gain"] == 0.0
    assert mean_top1(after, "image", "dna", "genus") - mean_top1(before, "image", "dna", "genus") == 0.25


def test_demo_config_reads_the_hdf5_under_out(tmp_path):
    cfg = demo_config(tmp_path / "d", epochs=3, sets=["train.batch_size=8"])
    assert cfg.data.hdf5 == str((tmp_path / "d" / "data" / "BIOSCAN_5M_sample.hdf5").resolve())
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.name) == (3, 8, "demo")
    assert cfg.train.best.query == "image" and cfg.train.best.key == "dna" and cfg.train.best.level == "genus"
    with pytest.raises(ConfigError, match="training switched off"):
        demo_config(tmp_path / "d", preset="none-5m")


def test_prepare_out_keeps_other_folders(tmp_path):
    _prepare_out(tmp_path / "new", overwrite=False)  # absent: fine
    other = tmp_path / "other"
    (other / "checkpoints" / "best").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already holds a demo run"):
        _prepare_out(other, overwrite=False)
    with pytest.raises(ConfigError, match="was not made by `bioclip demo`"):
        _prepare_out(other, overwrite=True)
    assert (other / "checkpoints" / "best").is_dir()
    ours = tmp_path / "ours"
    (ours / "checkpoints").mkdir(parents=True)
    (ours / SUMMARY_FILE).write_text("{}")
    _prepare_out(ours, overwrite=True)
    assert not ours.exists()


def test_torch_threads_is_restored():
    import torch

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(0):
        assert torch.get_num_threads() == before


def test_demo_cli_refuses_a_folder_it_did_not_make(tmp_path):
    other = tmp_path / "mine"
    (other / "checkpoints" / "last").mkdir(parents=True)
    for extra in ([], ["--overwrite"]):
        res = run_cli("demo", "--out", str(other), *extra, cwd=tmp_path)
        assert res.returncode == 1, res.stderr
        assert res.stderr.count("Error:") == 1 and "Traceback" not in res.stderr
    assert (other / "checkpoints" / "last").is_dir()
    res = run_cli("demo", "--out", str(tmp_path / "x"), "--threads", "-1", cwd=tmp_path)
    assert res.returncode == 1 and "Error: --threads must be 0" in res.stderr


@pytest.mark.slow
def test_demo_trains_past_the_untrained_model(demo_run):
    res = demo_run["result"]
    assert res.returncode == 0, res.stderr[-3000:]
    out = demo_run["out"]
    before = EvalResult.from_json(json.loads((out / "baseline" / "results" / "eval_val.json").read_text()))
    after = EvalResult.from_json(json.loads((out / "results" / "eval_val.json").read_text()))
    # the headline of the demo, on the fixed seed: image->DNA genus accuracy rises clearly above the untrained model
    gain = mean_top1(after, "image", "dna", "genus") - mean_top1(before, "image", "dna", "genus")
    assert gain >= 0.05, (mean_top1(before, "image", "dna", "genus"), mean_top1(after, "image", "dna", "genus"))
    # the sample's unseen species are new species of known genera: placed in the right genus more often than
    # identified (never the other way round; the same number in every row was the old sample's flaw)
    for query, key in (("image", "dna"), ("image", "image"), ("dna", "dna")):
        genus, species = (after.accuracy(query, key, "unseen", "micro", 1, lv) for lv in ("genus", "species"))
        assert genus >= species
    assert after.accuracy("dna", "dna", "unseen", "micro", 1, "genus") > after.accuracy(
        "dna", "dna", "unseen", "micro", 1, "species"
    )
    assert mean_top1(after, "image", "image", "genus") > mean_top1(before, "image", "image", "genus")
    assert after.n_queries == {"seen": 39, "unseen": 36} and after.n_keys == 203
    summary = json.loads(demo_run["json"].read_text())
    assert summary["comparison"] == comparison_rows(before, after, percent=False)
    record = json.loads((out / SUMMARY_FILE).read_text())
    assert record["status"] == "complete" and record["epochs"] == DEMO_TEST_EPOCHS
    assert record["steps"] == DEMO_TEST_EPOCHS * 14  # 224 training rows, batch 16
    # the printed table and the file list
    assert "untrained -> trained" in res.stdout
    for search in ("image -> image", "dna -> dna", "image -> dna"):
        assert res.stdout.count(search) == 2  # seen and unseen rows
    for what in ("sample dataset (HDF5)", "best checkpoint", "trained model: embeddings", "untrained model: metrics"):
        assert what in res.stdout
    assert "figure: embedding map" in res.stdout and "figure: training curves" in res.stdout
    assert len(summary["files"]) == 17 and all((out.parents[1] / f["path"]).exists() for f in summary["files"])
    assert "bioclip predict" in res.stderr and "synthetic" in res.stderr


@pytest.mark.slow
def test_demo_folder_is_an_ordinary_run(demo_run, tmp_path):
    from bioclip_cli.config import load_run_config

    out = demo_run["out"]
    cfg = load_run_config(out / "config.yaml")
    assert cfg.name == "demo" and cfg.train.epochs == DEMO_TEST_EPOCHS
    assert (out / "checkpoints" / "best" / "model.safetensors").is_file()
    res = run_cli("eval", "--run", str(out), "--query", "image", "--key", "dna", "--json", str(tmp_path / "e.json"))
    assert res.returncode == 0, res.stderr
    again = json.loads((tmp_path / "e.json").read_text())["results"]["image|dna"]
    saved = json.loads((out / "results" / "eval_val.json").read_text())["results"]["image|dna"]
    assert again == saved
    # a second demo into the same folder is refused, and the run is kept
    res = run_cli("demo", "--out", str(out), cwd=tmp_path)
    assert res.returncode == 1 and "already holds a demo run" in res.stderr and "--overwrite" in res.stderr
