"""Training building blocks without a model: the epoch sampler, evaluation shards, lr recipes, run directories."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from bioclip_cli.config import load_config, save_config
from bioclip_cli.config.schema import TrainConfig
from bioclip_cli.data.sampler import EpochSampler, epoch_permutation, shard_rows
from bioclip_cli.errors import ConfigError, DataError
from bioclip_cli.models.optim import build_optimizer, build_scheduler, current_lr, effective_lr
from bioclip_cli.runs.resume import changed_settings
from bioclip_cli.runs.run_dir import RunDir, list_runs, resolve_run, run_checkpoint
from bioclip_cli.runs.train_state import weights_digest

# ---------------------------------------------------------------------------------------------- sampler


def test_permutation_depends_on_seed_and_epoch_only():
    a = epoch_permutation(50, seed=7, epoch=0)
    assert sorted(a.tolist()) == list(range(50))
    assert np.array_equal(a, epoch_permutation(50, seed=7, epoch=0))
    assert not np.array_equal(a, epoch_permutation(50, seed=7, epoch=1))  # a new order every epoch
    assert not np.array_equal(a, epoch_permutation(50, seed=8, epoch=0))
    assert not np.array_equal(epoch_permutation(50, 1, 0), epoch_permutation(50, 0, 1))


def test_ranks_split_each_global_batch_in_rank_order():
    n, b, world = 23, 3, 2  # global batch 6: 3 full batches, 5 rows dropped
    single = EpochSampler(n, b * world, seed=1)
    shards = [EpochSampler(n, b, seed=1, rank=r, world=world) for r in range(world)]
    for epoch in (0, 1):
        for s in (single, *shards):
            s.set_epoch(epoch)
        per_rank = [list(s) for s in shards]
        assert len(single) == len(per_rank[0]) == len(per_rank[1]) == 3
        for step, batch in enumerate(single):
            assert per_rank[0][step] + per_rank[1][step] == batch
        rows = [r for batch in single for r in batch]
        assert len(rows) == len(set(rows)) == 18
        assert rows == epoch_permutation(n, 1, epoch)[:18].tolist()


def test_resume_position_yields_exactly_the_remaining_batches():
    s = EpochSampler(40, 4, seed=3)
    s.set_epoch(2)
    whole = list(s)
    s.set_epoch(2, start=6)
    assert len(s) == 4
    assert list(s) == whole[6:]


def test_accumulation_drops_the_incomplete_last_step():
    s = EpochSampler(40, 4, seed=0, accumulate=3)  # 10 batches -> 3 steps of 3
    assert s.batches_per_epoch == 9


def test_batch_larger_than_the_group_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"train.batch_size=16 x 2 process\(es\) = 32 rows.*only 20 rows") as info:
        EpochSampler(20, 16, seed=0, world=2)
    assert "at most 10" in info.value.hint


@pytest.mark.parametrize("n,b,world", [(10, 3, 1), (10, 3, 2), (7, 4, 3), (2, 5, 3), (12, 2, 3)])
def test_shard_rows_gathered_in_rank_order_give_every_row_once(n, b, world):
    per_rank = [list(shard_rows(n, b, r, world)) for r in range(world)]
    assert len({len(steps) for steps in per_rank}) == 1  # the same number of steps on every process
    gathered = []
    for step in range(len(per_rank[0])):
        widths = {len(per_rank[r][step][0]) for r in range(world)}
        assert len(widths) == 1  # equal shapes for all_gather
        for r in range(world):
            rows, valid = per_rank[r][step]
            gathered += rows[:valid]
    assert gathered == list(range(n))


# ------------------------------------------------------------------------------------------------- optim


def test_v2_lr_scales_with_the_global_batch_and_one_cycle_starts_at_max_over_25():
    v2 = TrainConfig(optimizer="adamw", lr=5e-5, weight_decay=0.01, scheduler="onecycle", lr_reference_batch=500)
    lr = effective_lr(v2, 2000)
    assert lr == pytest.approx(2e-4)
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = build_optimizer(params, v2, lr)
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == 0.01
    sched = build_scheduler(opt, v2, lr, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(current_lr(opt))
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(lr / 25)
    assert int(np.argmax(lrs)) in (29, 30)  # peak after pct_start = 30% of the steps
    assert max(lrs) == pytest.approx(lr)
    assert lrs[-1] < lr / 1000  # cosine annealing to (max / 25) / 1e4


def test_v1_is_adam_at_a_constant_lr():
    v1 = TrainConfig()
    assert effective_lr(v1, 4000) == 1e-3  # no reference batch: no scaling
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], v1, 1e-3)
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["weight_decay"] == 0.0
    sched = build_scheduler(opt, v1, 1e-3, total_steps=10)
    for _ in range(5):
        opt.step()
        sched.step()
    assert current_lr(opt) == 1e-3


def test_cosine_goes_from_lr_to_min_lr_over_all_steps_stepped_per_batch():
    cos = TrainConfig(optimizer="adamw", lr=1e-3, scheduler="cosine", min_lr=1e-5)
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], cos, 1e-3)
    sched = build_scheduler(opt, cos, 1e-3, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(current_lr(opt))
        opt.step()
        sched.step()
    lrs.append(current_lr(opt))  # after the last step
    assert lrs[0] == 1e-3
    assert lrs[50] == pytest.approx((1e-3 + 1e-5) / 2, rel=1e-12)
    assert lrs[25] == pytest.approx(1e-5 + (1e-3 - 1e-5) * (1 + np.cos(np.pi / 4)) / 2, rel=1e-12)
    assert lrs[100] == pytest.approx(1e-5, rel=1e-12)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_cosine_min_lr_above_lr_is_a_config_error():
    from bioclip_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="min_lr"):
        TrainConfig(lr=1e-6, scheduler="cosine", min_lr=1e-5).validate()
    TrainConfig(lr=1e-6, min_lr=1e-5).validate()  # other schedules ignore min_lr


def test_frozen_model_has_nothing_to_train():
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer([torch.nn.Parameter(torch.zeros(2), requires_grad=False)], TrainConfig(), 1e-3)


# --------------------------------------------------------------------------------------------- run dirs


def test_missing_run_lists_the_runs_that_exist(tmp_path):
    save_config(load_config("tiny"), tmp_path / "alpha" / "config.yaml")
    save_config(load_config("tiny"), tmp_path / "beta" / "config.yaml")
    (tmp_path / "not-a-run").mkdir()
    assert list_runs(tmp_path) == ["alpha", "beta"]
    with pytest.raises(DataError, match=r"does not exist \(runs in .*: alpha, beta\)"):
        resolve_run(tmp_path / "gamma")
    with pytest.raises(DataError, match="has no config.yaml"):
        resolve_run(tmp_path / "not-a-run")
    run = resolve_run(tmp_path / "alpha")
    with pytest.raises(DataError, match=r"no best checkpoint .*checkpoints: none") as info:
        run_checkpoint(run, "best")
    assert "bioclip train --out" in info.value.hint
    (run.last).mkdir(parents=True)
    (run.last / "model.safetensors").write_bytes(b"x")
    with pytest.raises(DataError, match=r"checkpoints: last") as info:
        run_checkpoint(run, "best")
    assert info.value.hint == "use --which last"
    assert run_checkpoint(run, "last") == run.last


def test_changed_settings_ignore_what_a_resume_may_change():
    a = load_config("tiny")
    b = dataclasses.replace(
        a,
        train=dataclasses.replace(a.train, epochs=9, max_steps=3, lr=0.5),
        data=dataclasses.replace(a.data, num_workers=3),
    )
    assert changed_settings(a, b) == ["train.lr: 0.001 -> 0.5"]


def test_weights_digest_sees_every_byte():
    model = torch.nn.Linear(3, 2)
    before = weights_digest(model)
    assert before == weights_digest(model)
    with torch.no_grad():
        model.bias[1] = torch.nextafter(model.bias[1], torch.tensor(2.0))
    assert weights_digest(model) != before


def test_run_dir_layout():
    run = RunDir(Path("runs/x"))
    assert run.config == Path("runs/x/config.yaml")
    assert (run.last, run.best, run.resume_state) == tuple(
        Path("runs/x/checkpoints") / n for n in ("last", "best", "resume")
    )
    assert (run.metrics, run.embeddings) == (Path("runs/x/metrics.jsonl"), Path("runs/x/embeddings"))
