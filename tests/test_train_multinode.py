"""Two "machines" on 127.0.0.1 (`accelerate launch --num_machines 2 --machine_rank 0|1`, one gloo/CPU process
each) train in step, and end with the weights of the same training as two processes on one machine.

The single-machine two-process run is itself checked against one process on the concatenated batch in
tests/test_train_ddp.py (gathered loss and gradients), so the chain covers "past one machine".
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.test_train_ddp import ENV, LAUNCH, file_digest, launch

TRAIN = ["-m", "bioclip_cli", "train", "--preset", "tiny", "--set", "train.loss=gathered",
         "--set", "model.learn_logit_scale=true", "--batch-size", "8", "--max-steps", "2"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _machine(rank: int, port: int, args: list[str], cwd) -> subprocess.Popen:
    launch_args = [a for a in LAUNCH if a not in ("--main_process_port", "0")]
    launch_args[launch_args.index("--num_machines") + 1] = "2"
    cmd = [sys.executable, *launch_args, "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
           "--main_process_port", str(port), *args]  # fmt: skip
    return subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **ENV}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.slow
def test_two_machines_train_in_step_and_match_one_machine(sample_h5, tmp_path):
    args = [*TRAIN, "--set", f"data.hdf5={sample_h5}", "--out", "runs/nodes"]
    port = _free_port()
    machines = [_machine(rank, port, args, tmp_path) for rank in (0, 1)]
    outputs = [m.communicate(timeout=600) for m in machines]
    for m, (_, err) in zip(machines, outputs, strict=True):
        assert m.returncode == 0, err[-3000:]
    run = tmp_path / "runs/nodes"
    meta = json.loads((run / "checkpoints/last/meta.json").read_text())
    assert meta["processes"] == 2
    assert len(set(meta["replica_weights_sha256"])) == 1
    assert meta["weights_sha256"] == file_digest(run / "checkpoints/last/model.safetensors")

    one_machine = launch(*TRAIN, "--set", f"data.hdf5={sample_h5}", "--out", "runs/one", cwd=tmp_path)
    assert one_machine.returncode == 0, one_machine.stderr[-3000:]
    single = json.loads((tmp_path / "runs/one/checkpoints/last/meta.json").read_text())
    assert single["weights_sha256"] == meta["weights_sha256"]  # bit for bit: same ranks, data, seeds, reduction
