"""Two CPU processes (gloo): synchronised replicas, the gathered loss of the global batch, sharded embedding.

`accelerate launch --num_processes 2 --cpu` starts a single process in Accelerate 1.x (multi-CPU needs
mpirun), so the launches here use `--multi_gpu`, which starts the processes through torchrun; on a machine
without CUDA our Accelerator setup turns them into a CPU (gloo) process group.

This file is also the worker script of `test_gathered_loss_and_gradients_equal_the_single_process_ones`
(run under `accelerate launch` with `--worker`).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LAUNCH = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]  # fmt: skip
ENV = {"OMP_NUM_THREADS": "1", "BIOCLIP_QUIET": "1"}


def launch(*args, cwd):
    env = {**os.environ, **ENV}
    return subprocess.run([sys.executable, *LAUNCH, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def file_digest(path: Path) -> str:
    """The training workflow's weights_digest, recomputed from a saved model.safetensors."""
    import torch
    from safetensors.torch import load_file

    digest = hashlib.sha256()
    for name, t in sorted(load_file(str(path)).items()):
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.slow
def test_two_processes_keep_identical_weights(sample_h5, tmp_path):
    result = launch("-m", "bioclip_cli", "train", "--preset", "tiny", "--set", f"data.hdf5={sample_h5}",
                    "--set", "train.loss=gathered", "--set", "model.learn_logit_scale=true",
                    "--set", "train.grad_accum=2", "--batch-size", "8", "--max-steps", "3", "--out", "runs/ddp",
                    cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("stopped at --max-steps") == 1  # only the main process reports
    run = tmp_path / "runs/ddp"
    meta = json.loads((run / "checkpoints/last/meta.json").read_text())
    assert meta["processes"] == 2
    rank0, rank1 = meta["replica_weights_sha256"]
    assert rank0 == rank1 == meta["weights_sha256"] == file_digest(run / "checkpoints/last/model.safetensors")
    progress = json.loads((run / "checkpoints/resume/progress.json").read_text())
    assert (progress["world"], progress["step"], progress["samples"]) == (2, 3, 3 * 8 * 2 * 2)
    assert sorted((run / "checkpoints/resume").glob("random_states_*.pkl")) == [
        run / "checkpoints/resume" / f"random_states_{r}.pkl" for r in (0, 1)
    ]
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert [s["step"] for s in steps] == [1, 2, 3]


@pytest.mark.slow
def test_gathered_loss_and_gradients_equal_the_single_process_ones(sample_h5, tmp_path):
    import h5py
    import numpy as np
    import torch

    from bioclip_cli.workflows.embed import embed, plan_embedding

    report = tmp_path / "report.json"
    result = launch(__file__, "--worker", str(sample_h5), str(report), str(tmp_path / "two"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    r = json.loads(report.read_text())
    assert r["world"] == 2
    assert r["global_rows"] == r["single_rows"]  # the ranks' batches, in rank order, are the global batch
    for loss in r["rank_losses"]:
        assert loss == pytest.approx(r["single_loss"], rel=1e-6)
    assert r["grads_compared"] > 10
    assert r["max_grad_error"] < 1e-4, r

    # sharded embedding: the rows of both processes come back in file order
    torch.set_num_threads(1)
    one = embed(plan_embedding(preset="tiny", sets=[f"data.hdf5={sample_h5}"], out=tmp_path / "one"))
    two = tmp_path / "two/embeddings/extracted_feature_from_val_split.hdf5"
    with h5py.File(one.h5_path, "r") as a, h5py.File(two, "r") as b:
        for role in ("seen", "unseen", "key"):
            assert b[role]["sample_ids"].asstr()[()].tolist() == a[role]["sample_ids"].asstr()[()].tolist()
            for name in ("encoded_image_feature", "encoded_dna_feature", "encoded_language_feature"):
                np.testing.assert_allclose(b[role][name][()], a[role][name][()], atol=1e-6, err_msg=f"{role}/{name}")


def _worker(h5: str, report: str, embed_out: str) -> None:
    """Under `accelerate launch` (2 processes): one DDP step with the gathered loss, checked on rank 0 against
    one process on the concatenated batch; then a sharded `embed`."""
    import torch
    from accelerate.utils import gather_object, set_seed

    from bioclip_cli.config import load_config
    from bioclip_cli.data.datasets import TrainDataset, batch_to_device, collate
    from bioclip_cli.data.sampler import EpochSampler
    from bioclip_cli.models.build import build_model
    from bioclip_cli.models.loss import ClipLoss
    from bioclip_cli.runs.accelerator import make_accelerator
    from bioclip_cli.workflows.embed import embed, plan_embedding

    torch.set_num_threads(1)
    sets = [f"data.hdf5={h5}", "train.loss=gathered", "model.learn_logit_scale=true"]
    cfg = load_config("tiny", sets=sets)
    acc = make_accelerator()
    rank, world = acc.process_index, acc.num_processes
    data = TrainDataset(h5, cfg.data.train_group, cfg.data, modalities=cfg.model.modalities,
                        tokenizer=cfg.model.text.tokenizer, seed=cfg.train.seed)  # fmt: skip
    sampler = EpochSampler(len(data), 8, seed=cfg.train.seed, rank=rank, world=world)
    sampler.set_epoch(1)
    rows = next(iter(sampler))

    set_seed(0)
    model = build_model(cfg.model)
    ddp = acc.prepare(model)
    ddp.eval()  # no dropout, so that the single-process reference computes the same function
    loss = ClipLoss(gather=True)(
        ddp(batch_to_device(collate([data[i] for i in rows]), acc.device, cfg.data.image)), model.logit_scale
    )
    acc.backward(loss)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    global_rows = [r for part in gather_object([rows]) for r in part]
    losses = gather_object([loss.item()])
    if acc.is_main_process:
        single = EpochSampler(len(data), 8 * world, seed=cfg.train.seed)
        single.set_epoch(1)
        ref_rows = next(iter(single))
        set_seed(0)
        ref = build_model(cfg.model).eval()
        ref_loss = ClipLoss(gather=False)(
            ref(batch_to_device(collate([data[i] for i in ref_rows]), acc.device, cfg.data.image)), ref.logit_scale
        )
        ref_loss.backward()
        ref_grads = {n: p.grad for n, p in ref.named_parameters() if p.grad is not None}
        assert ref_grads.keys() == grads.keys()
        error = max(float((grads[n] - g).abs().max() / (g.abs().max() + 1e-12)) for n, g in ref_grads.items())
        out = {"world": world, "global_rows": global_rows, "single_rows": ref_rows, "rank_losses": losses,
               "single_loss": ref_loss.item(), "grads_compared": len(ref_grads), "max_grad_error": error}  # fmt: skip
        Path(report).write_text(json.dumps(out))
    acc.wait_for_everyone()
    embed(plan_embedding(preset="tiny", sets=[f"data.hdf5={h5}"], out=embed_out))


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker(*sys.argv[2:5])
