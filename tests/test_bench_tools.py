"""bench/gpu_check.sh fails loudly without CUDA; bench/run.py turns bench results into RESULTS.md rows."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
from conftest import REPO

BENCH = REPO / "bench"


def _load_run_module():
    spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_fails_loudly_without_cuda():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    res = subprocess.run(["bash", str(BENCH / "gpu_check.sh")], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2
    assert "gpu_check: FAILED: no CUDA device is available" in res.stderr
    assert "it does not skip" in res.stderr and "CUDA_VISIBLE_DEVICES=''" in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""


def test_gpu_check_without_python_fails_loudly():
    env = {**os.environ, "PYTHON": "no-such-python-3"}
    res = subprocess.run(["bash", str(BENCH / "gpu_check.sh")], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 2 and "no Python interpreter 'no-such-python-3'" in res.stderr


def test_figures_carry_baseline_and_ratio():
    run = _load_run_module()
    data = {"m": {"value": 800.0, "baseline": 1000.0, "baseline is": "decode", "ratio": 0.8, "paired ratio": 0.75,
                  "target": 0.7}}  # fmt: skip
    (row,) = run.figures("data", data)
    assert (row["value"], row["baseline"], row["ratio"], row["ok"]) == (800.0, 1000.0, 0.75, "yes")
    data["m"].update({"paired ratio": 0.65, "paired range": "0.55-0.8 (5 processes)"})
    (row,) = run.figures("data", data)
    assert (row["ratio"], row["ok"]) == (0.65, "NO") and "0.55-0.8 (5 processes)" in row["ratio means"]
    models = {"batch": 8, "bf16": False, "threads": 1,
              "image": {"ours_items_s": 9.0, "bare_items_s": 10.0, "speed_ratio": 0.9, "ours_peak_mib": 110.0,
                        "bare_peak_mib": 100.0, "memory_ratio": 1.1}}  # fmt: skip
    speed, memory = run.figures("models", models)
    assert speed["ratio"] == 0.9 and speed["ok"] == "NO" and memory["ratio"] == 1.1
    assert "LoRA unmerged" in speed["measure"]
    retrieval = {"queries": 10, "keys": 100, "width": 8, "search_s": 2.0, "torch_matmul_topk_s": 4.0,
                 "search_vs_torch": 0.5, "metrics_s": 0.1, "metrics_share_of_search": 0.05,
                 "same_neighbour_lists": 1.0}  # fmt: skip
    rows = run.figures("retrieval", retrieval)
    assert [r["ratio"] for r in rows] == [0.5, 0.05, 1.0] and rows[1]["ok"] == "yes"
    retrieval.update(build_s=0.5, screened_total_s=1.0, faiss_vs_screened=2.5, screened_same_lists=1.0)
    rows = run.figures("retrieval", retrieval)
    assert [r["ratio"] for r in rows[3:]] == [2.5, 1.0] and rows[3]["ok"] == rows[4]["ok"] == "yes"
    gradcache = {"preset": "tiny", "batch": 32, "micro": 8, "cached_peak_rss_mib": 110.0, "plain-m_peak_rss_mib": 100.0,
                 "plain-B_peak_rss_mib": 200.0, "cached_step_s": 1.3, "plain-B_step_s": 1.0,
                 "memory_vs_plain_micro": 1.1, "memory_vs_plain_batch": 0.55, "time_vs_plain_batch": 1.3,
                 "activation_mib_per_sample": 4.2}  # fmt: skip
    rows = run.figures("gradcache", gradcache)
    assert [r["ratio"] for r in rows] == [1.1, 1.3, 0.55] and rows[0]["ok"] == rows[1]["ok"] == "yes"
    train = {"tiny": {"batch": 16, "loop_samples_per_s": 90.0, "bare_samples_per_s": 100.0, "overhead": 0.111}}
    (row,) = run.figures("train", train)
    assert row["ratio"] == pytest.approx(0.9) and row["ok"] == "yes"
    demo = {"epochs": 16, "wall_s": 90.0, "cpu_s": 60.0, "budget_s": 180.0, "image_dna_genus_untrained": 0.02,
            "image_dna_genus_trained": 0.25, "default_threads": 2, "step_s_1_thread": 0.2,
            "step_s_default_threads": 0.4}  # fmt: skip
    rows = run.figures("demo", demo)
    assert [r["ratio"] for r in rows] == [0.5, pytest.approx(1 / 3), pytest.approx(0.23), 0.5]
    assert rows[0]["ok"] == "yes" and rows[2]["ok"] == "yes"
    # a layout run.py does not know: its numbers are kept, flagged as having no baseline
    raw = run.figures("train", {"new": {"rate": 3.0, "name": "x"}})
    assert raw == [run._row("train", "new.rate", 3.0, None, "(layout not recognised by run.py)", None, "-")]


def test_run_py_writes_results(tmp_path):
    out = tmp_path / "RESULTS.md"
    res = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--quick", "--only", "retrieval", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    text = out.read_text()
    assert text.startswith("# Benchmark results") and "## Machine" in text and "load average" in text
    figures = [ln for ln in text.splitlines() if ln.startswith("| retrieval |")]
    assert len(figures) == 6  # five figures (faiss, metrics, torch, screened speed and lists) + the status row
    assert "torch matmul + topk, same shapes" in text
    res = subprocess.run([sys.executable, str(BENCH / "run.py"), "--only", "nope"], capture_output=True, text=True)
    assert res.returncode == 2 and "unknown bench(es) nope" in res.stderr
