"""`bioclip train` as users run it: the installed script in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from conftest import bioclip_exe, run_cli

LEARN = [
    "--set", "model.modalities=[dna,text]",
    "--set", "model.dna.pooling=mean",
    "--set", "model.text.pooling=mean",
    "--set", "model.dna.finetune=full",
    "--set", "model.text.finetune=full",
    "--set", "train.best={query: dna, key: text, level: genus}",
    "--set", "train.log_every=1",
    "--batch-size", "8",
]  # fmt: skip
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny models: a second OpenMP thread only adds contention


def one_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    return errors[0]


def test_untrained_preset_explains_and_shows_the_embed_command(tmp_path):
    result = run_cli("train", "--preset", "none-5m", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "untrained baseline" in result.stderr
    assert "bioclip embed --preset none-5m" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_hdf5_names_the_file_and_how_to_make_it(tmp_path):
    result = run_cli("train", "--preset", "tiny", "--set", "data.hdf5=nowhere/sample.hdf5", cwd=tmp_path)
    one_error(result, "nowhere/sample.hdf5 does not exist", "bioclip build-hdf5", "bioclip download")


def test_missing_group_names_the_group_and_the_groups_there(sample_h5, tmp_path):
    result = run_cli("train", "--preset", "tiny", "--set", f"data.hdf5={sample_h5}", "--set",
                     "data.key_group=keys_of_nothing", cwd=tmp_path)  # fmt: skip
    one_error(result, "no group 'keys_of_nothing'", "all_keys, no_split_and_seen_train")


@pytest.mark.slow
def test_batch_larger_than_the_training_group(sample_h5, tmp_path):
    result = run_cli("train", "--preset", "tiny", "--set", f"data.hdf5={sample_h5}", "--batch-size", "500",
                     cwd=tmp_path, env=ONE_THREAD)  # fmt: skip
    one_error(result, "train.batch_size=500", "only 224 rows", "--batch-size 224")


def test_refuses_to_overwrite_a_run_and_to_resume_nothing(sample_h5, tmp_path):
    (tmp_path / "runs/tiny/checkpoints/last").mkdir(parents=True)
    result = run_cli("train", "--preset", "tiny", "--set", f"data.hdf5={sample_h5}", cwd=tmp_path)
    one_error(result, "runs/tiny already holds a run", "--resume", "--out runs/tiny-2")
    result = run_cli("train", "--out", "runs/other", "--resume", cwd=tmp_path)
    one_error(result, "run directory runs/other does not exist (runs in runs/: tiny)", "without --resume")


@pytest.mark.slow
def test_ctrl_c_saves_a_resumable_state_and_resume_finishes_the_run(sample_h5, tmp_path):
    args = ["train", "--preset", "tiny", "--set", f"data.hdf5={sample_h5}", *LEARN, "--epochs", "2", "--out", "runs/x"]
    env = {**os.environ, **ONE_THREAD}
    proc = subprocess.Popen([bioclip_exe(), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    metrics = tmp_path / "runs/x/metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and metrics.read_text().count('"train"') >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    progress = json.loads((tmp_path / "runs/x/checkpoints/resume/progress.json").read_text())
    stopped = progress["step"]
    assert 2 <= stopped < 56 and progress["batch"] == stopped % 28
    assert f"Error: stopped at step {stopped} " in stderr
    assert "saved a resumable state in runs/x/checkpoints/resume" in stderr
    assert "bioclip train --out runs/x --resume" in stderr

    result = run_cli(
        "train", "--out", "runs/x", "--resume", "--max-steps", str(stopped + 3), cwd=tmp_path, env=ONE_THREAD
    )
    assert result.returncode == 0, result.stderr
    assert f"stopped at --max-steps: {(stopped + 3) // 28} epoch(s), {stopped + 3} steps" in result.stderr
    assert "Next: bioclip embed --run runs/x" in result.stderr
    assert "resuming with a changed setting" not in result.stderr  # max_steps may change on resume
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [d["step"] for d in lines if d["type"] == "train"]
    assert steps == list(range(1, stopped + 4))  # every step logged once
    meta = json.loads((tmp_path / "runs/x/checkpoints/last/meta.json").read_text())
    assert meta["step"] == stopped + 3
