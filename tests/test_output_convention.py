"""The output convention of every table command, through the installed script: `--format table|json|csv`,
`--output FILE`, whole values in a pipe, typed choices with one-line errors, shell completion."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess

import numpy as np
import pytest
from conftest import bioclip_exe, run_cli

from bioclip_cli.data.embedding_file import write_embedding_file

LEVELS = ("order", "family", "genus", "species")
HDF5_URL = "https://aspis.cmpt.sfu.ca/projects/bioscan/BIOSCAN_CLIP_for_downloading/BIOSCAN_5M.hdf5"


@pytest.fixture(scope="module")
def tiny_embeddings(tmp_path_factory):
    """A published-layout embedding file (8-d features, 30 seen / 20 unseen queries, 50 keys) and its labels."""
    rng = np.random.default_rng(0)
    feats, labels = {}, {}
    for group, rows in (("seen", 30), ("unseen", 20), ("key", 50)):
        feats[group] = {m: rng.standard_normal((rows, 8)).astype(np.float32) for m in ("image", "dna", "text")}
        species = rng.integers(0, 9, rows)
        labels[group] = {lv: [f"{lv}{s % (i + 2)}" for s in species] for i, lv in enumerate(LEVELS)}
    return write_embedding_file(tmp_path_factory.mktemp("emb") / "embeddings", "val", feats, labels)


def _commands(h5, labels) -> dict[str, list[str]]:
    return {
        "presets": ["presets"],
        "download": ["download", "5m", "--dry-run"],
        "env": ["env"],
        "inspect": ["inspect", str(h5)],
        "eval": ["eval", "--embeddings", str(h5), "--labels", str(labels), "--k", "1"],
    }


@pytest.mark.parametrize("name", ["presets", "download", "env", "inspect", "eval"])
def test_every_table_command_prints_json_and_csv_on_stdout(name, tiny_embeddings):
    args = _commands(*tiny_embeddings)[name]
    res = run_cli(*args, "--format", "json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)  # stdout holds the JSON and nothing else (messages are on stderr)
    expected_keys = {
        "presets": lambda d: {r["preset"] for r in d} >= {"idt-5m", "none-1m", "demo"},
        "download": lambda d: d[0]["source"] == HDF5_URL and d[0]["status"] == "missing",
        "env": lambda d: {"torch", "faiss", "huggingface", "threads"} <= set(d),
        "inspect": lambda d: (
            d["kind"] == "embedding" and {g["group"] for g in d["groups"]} == {"seen", "unseen", "key"}
        ),
        "eval": lambda d: d["k"] == [1] and d["n_queries"] == {"seen": 30, "unseen": 20} and d["n_keys"] == 50,
    }[name]
    assert expected_keys(data), data

    res = run_cli(*args, "--format", "csv")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert rows and "┃" not in res.stdout and "Next:" not in res.stdout


def test_output_file_takes_the_data_and_stdout_stays_empty(tmp_path, tiny_embeddings):
    h5, labels = tiny_embeddings
    out = tmp_path / "deep" / "r.json"
    res = run_cli("eval", "--embeddings", str(h5), "--labels", str(labels), "--format", "json", "--output", str(out))
    assert res.returncode == 0, res.stderr
    assert res.stdout == "" and f"wrote {out}" in res.stderr
    from_file = json.loads(out.read_text())

    # the --json/--csv shorthands still write the same objects beside the printed table
    res = run_cli("eval", "--embeddings", str(h5), "--labels", str(labels), "--json", str(tmp_path / "j.json"),
                  "--csv", str(tmp_path / "c.csv"), "--output", str(tmp_path / "o.csv"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "Top-k accuracy (%)" in res.stdout
    assert json.loads((tmp_path / "j.json").read_text()) == from_file
    assert (tmp_path / "c.csv").read_text() == (tmp_path / "o.csv").read_text()
    rows = list(csv.DictReader((tmp_path / "c.csv").open()))
    assert float(rows[0]["seen species"]) == from_file["results"]["image|image"]["seen"]["micro"]["1"]["species"]


def test_piped_tables_keep_whole_values_at_80_columns():
    env = {**os.environ, "COLUMNS": "80"}
    dry = subprocess.run([bioclip_exe(), "download", "5m", "--dry-run"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env=env, check=True)  # fmt: skip
    grep = subprocess.run(["grep", "BIOSCAN_5M.hdf5"], input=dry.stdout, capture_output=True, text=True, check=True)
    [line] = grep.stdout.splitlines()
    assert HDF5_URL in line and "data/BIOSCAN_5M/BIOSCAN_5M.hdf5" in line and "…" not in dry.stdout


def test_choice_options_list_their_values_and_reject_others_in_one_line():
    res = run_cli("embed", "--help", env={"COLUMNS": "200"})
    assert "best|last" in res.stdout.replace(" ", "") and "float32|float64" in res.stdout.replace(" ", "")
    assert "table|json|csv" in res.stdout.replace(" ", "")
    res = run_cli("presets", "--format", "xml")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")] == [
        "Error: --format 'xml' is not valid; valid: table, json, csv"
    ]
    res = run_cli("train", "--preset", "tiny", "--precision=fp8")
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")] == [
        "Error: --precision 'fp8' is not valid; valid: fp32, bf16, fp16"
    ]


def test_shell_completion_offers_the_choices():
    def complete(words: str) -> list[str]:
        cword = len(words.split()) - (0 if words.endswith(" ") else 1)  # the word being completed
        env = {"_BIOCLIP_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
        res = run_cli(env=env)
        assert res.returncode == 0, res.stderr
        return res.stdout.split()

    assert complete("bioclip eval --format ") == ["table", "json", "csv"]
    assert complete("bioclip embed --which ") == ["best", "last"]
    assert complete("bioclip eval --device cu") == ["cuda", "cuda:0", "cuda:1"]
    assert complete("bioclip eval --key ") == ["image", "dna", "text", "avg", "concat", "all"]
    assert complete("bioclip download ") == ["5m", "1m", "insect", "checkpoints", "embeddings", "encoders"]
    assert "env" in complete("bioclip e")
    script = run_cli("--show-completion", "bash")
    assert script.returncode == 0 and "_BIOCLIP_COMPLETE" in script.stdout


@pytest.mark.parametrize(
    "command", ["download", "build-hdf5", "train", "embed", "eval", "presets", "inspect", "demo", "predict", "env"]
)
def test_every_table_command_takes_format_and_output(command):
    res = run_cli(command, "--help", env={"COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    assert "--format" in res.stdout and "--output" in res.stdout and "table|json|csv" in res.stdout.replace(" ", "")


@pytest.mark.slow
def test_train_summary_as_json_keeps_progress_tables_on_stderr(sample_h5, tmp_path):
    res = run_cli("train", "--preset", "tiny", "--set", f"data.hdf5={sample_h5}", "--max-steps", "2", "--out",
                  "runs/t", "--format", "json", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    assert res.returncode == 0, res.stderr
    [summary] = json.loads(res.stdout)
    assert summary["run"] == "runs/t" and summary["steps"] == 2 and summary["stopped"] == "max_steps"
    assert "parameters" in res.stderr  # the parameter table is progress here: on stderr
