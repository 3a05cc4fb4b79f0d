"""Issue 16, faults 1-3: one writer per run directory, unique temporary names, a refused resume changes nothing."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from bioclip_cli.config import load_config, load_run_config
from bioclip_cli.errors import ConfigError

HOST = socket.gethostname()


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that holds the run's lock until its stdin closes."""
    code = textwrap.dedent(f"""
        import sys
        from bioclip_cli.run_lock import run_lock
        with run_lock({str(folder)!r}, "bioclip train"):
            print("held", flush=True)
            sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(timeout=30)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    from bioclip_cli.run_lock import InUse, run_lock

    run = tmp_path / "r"
    holder = hold_lock(run)
    try:
        with pytest.raises(InUse) as err:
            with run_lock(run, "bioclip train"):
                pass
        assert str(err.value) == f"run {run} is in use by process {holder.pid} (host {HOST}) (bioclip train)"
        assert "--out" in err.value.hint
    finally:
        release(holder)
    with run_lock(run) as path:  # released with its holder
        assert json.loads(path.read_text())["pid"] != holder.pid
    assert not (run / ".lock").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_message(tmp_path):
    from bioclip_cli.run_lock import run_lock

    run = tmp_path / "r"
    run.mkdir()
    pid = dead_pid()
    (run / ".lock").write_text(json.dumps({"pid": pid, "host": HOST, "command": "bioclip train"}))
    messages = []
    with run_lock(run, on_takeover=messages.append) as path:
        import os

        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert messages == [
        f"took over the lock of run {run} left by process {pid} (host {HOST}), which is no longer running"
    ]


def test_train_into_a_run_in_use_is_refused_and_writes_nothing(sample_h5, tmp_path):
    holder = hold_lock(tmp_path / "r")
    try:
        result = run_cli("train", "--preset", "tiny", "--set", f"data.hdf5={sample_h5}", "--set", "train.max_steps=1",
                         "--epochs", "1", "--out", "r", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    finally:
        release(holder)
    assert result.returncode == 1, result.stderr
    assert f"run r is in use by process {holder.pid} (host {HOST})" in result.stderr
    assert "unexpected" not in result.stderr
    assert not (tmp_path / "r").exists()  # the holder made it only for its lock, and removed it


def test_embed_into_a_run_in_use_is_refused(tmp_path):
    from bioclip_cli.config import save_config

    run = tmp_path / "r"
    cfg = load_config("tiny")
    save_config(cfg, run / "config.yaml")
    (run / "checkpoints/best").mkdir(parents=True)
    torch.save({}, run / "checkpoints/best/model.safetensors")
    (run / "embeddings").mkdir()
    for name in ("extracted_feature_from_val_split.hdf5", "labels_val.json"):
        (run / "embeddings" / name).write_text("")
    holder = hold_lock(run)
    try:
        result = run_cli("embed", "--run", "r", cwd=tmp_path)
        result_eval = run_cli("eval", "--run", "r", cwd=tmp_path)
    finally:
        release(holder)
    assert result.returncode == 1 and f"run r is in use by process {holder.pid}" in result.stderr, result.stderr
    assert result_eval.returncode == 1 and f"run r is in use by process {holder.pid}" in result_eval.stderr


class FakeAccelerator:
    num_processes = 1

    def __init__(self):
        self.saved_into = []

    def wait_for_everyone(self):
        pass

    def save_state(self, path):
        self.saved_into.append(Path(path))
        (Path(path) / "model.safetensors").write_bytes(b"state")


def test_resume_state_temp_folder_is_unique_and_leaves_another_writers_alone(tmp_path):
    from bioclip_cli.runs.run_dir import RunDir
    from bioclip_cli.runs.train_state import TrainProgress, save_training_state

    run = RunDir(tmp_path / "r")
    other = run.checkpoints / ".resume.tmp"  # the fixed name every process used to share
    other.mkdir(parents=True)
    (other / "theirs").write_text("another process is writing here")
    acc = FakeAccelerator()
    save_training_state(acc, run, TrainProgress(step=3), main=True)
    assert (other / "theirs").read_text() == "another process is writing here"
    assert acc.saved_into[0].parent == run.checkpoints and acc.saved_into[0].name != ".resume.tmp"
    assert json.loads((run.resume_state / "progress.json").read_text())["step"] == 3
    assert sorted(p.name for p in run.checkpoints.iterdir()) == [".resume.tmp", "resume"]


def test_checkpoint_temp_folder_is_unique_and_removed_on_failure(tmp_path, monkeypatch):
    import os

    import safetensors.torch

    from bioclip_cli.models.build import build_model
    from bioclip_cli.models.checkpoint import save_checkpoint

    model = build_model(load_config("tiny").model)
    other = tmp_path / f".last.tmp-{os.getpid()}"  # the old per-pid name: a second writer in this process
    other.mkdir()
    (other / "theirs").write_text("x")
    save_checkpoint(model, tmp_path / "last")
    assert (other / "theirs").read_text() == "x"
    assert (tmp_path / "last/model.safetensors").is_file()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    before = (tmp_path / "last/model.safetensors").read_bytes()
    with pytest.raises(Exception, match="No space left on device writing") as err:
        save_checkpoint(model, tmp_path / "last")
    assert "unexpected" not in str(err.value)
    assert (tmp_path / "last/model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "last"]


def test_a_refused_resume_leaves_the_config_as_it_was(sample_h5, tmp_path):
    from bioclip_cli.workflows.train import resume_config, train

    torch.set_num_threads(1)
    run = tmp_path / "r"
    cfg = load_config("tiny", sets=[f"data.hdf5={sample_h5}", "train.epochs=1", "train.max_steps=2",
                                    "train.batch_size=8", "train.eval_every=0"])  # fmt: skip
    start = time.perf_counter()
    train(cfg, run)
    saved = (run / "config.yaml").read_text()
    changed = resume_config(run, sets=["model.output_dim=32", "train.max_steps=4"])
    with pytest.raises(ConfigError, match="does not fit this configuration"):
        train(changed, run, resume=True)
    assert (run / "config.yaml").read_text() == saved
    assert load_run_config(run / "config.yaml").model.output_dim == 16
    assert not (run / ".lock").exists()
    assert time.perf_counter() - start < 120
