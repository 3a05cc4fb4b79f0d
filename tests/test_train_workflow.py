"""`train()` on the bundled sample (CPU): it learns, it resumes exactly, it stops on a diverging loss.

The model is the tiny preset reduced to DNA + text with mean pooling and full fine-tuning; the shared run is
two short epochs (28 steps of 8 rows each), and the learning test resumes a copy of it to eight epochs, where
the DNA -> taxonomy-text alignment is clearly learnt.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bioclip_cli.config import load_config, load_run_config
from bioclip_cli.errors import ConfigError
from bioclip_cli.workflows.train import TrainEvents, TrainingDiverged, train

LEARN = [
    "model.modalities=[dna,text]",
    "model.dna.pooling=mean",
    "model.text.pooling=mean",
    "model.dna.finetune=full",
    "model.text.finetune=full",
    "train.lr=0.002",
    "train.batch_size=8",
    "train.epochs=2",
    "train.log_every=1",
    "train.best={query: dna, key: text, level: genus}",
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: per-op overhead dominates, and two OpenMP threads on a busy 2-core machine stall each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def learn_config(sample_h5, *extra):
    return load_config("tiny", sets=[f"data.hdf5={sample_h5}", *LEARN, *extra])


class Recorder(TrainEvents):
    def __init__(self):
        self.evals, self.messages, self.params = [], [], []

    def message(self, text):
        self.messages.append(text)

    def parameters(self, rows):
        self.params = rows

    def evaluated(self, epoch, step, result, selection):
        self.evals.append((epoch, step, result, selection))


def weights(path):
    return load_file(str(path / "model.safetensors"))


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def train_losses(run):
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {d["step"]: d["loss"] for d in lines if d["type"] == "train"}


@pytest.fixture(scope="module")
def run_a(sample_h5, tmp_path_factory):
    """Two epochs straight through."""
    out = tmp_path_factory.mktemp("train") / "a"
    events = Recorder()
    result = train(learn_config(sample_h5), out, events=events)
    return out, result, events


@pytest.fixture(scope="module")
def run_b_epoch1(sample_h5, tmp_path_factory):
    """The same configuration stopped after one epoch (kept pristine; tests copy it)."""
    out = tmp_path_factory.mktemp("train") / "b"
    result = train(learn_config(sample_h5, "train.epochs=1"), out)
    return out, result


def untrained_result(cfg):
    """Retrieval of the model before any step: same seed, same initial weights as the trained run."""
    from accelerate.utils import set_seed

    from bioclip_cli.data.datasets import EvalDataset
    from bioclip_cli.models.build import build_model
    from bioclip_cli.models.encode import encode_group
    from bioclip_cli.retrieval.evaluation import evaluate_arrays

    set_seed(cfg.train.seed)
    model = build_model(cfg.model)
    groups = {"key": cfg.data.key_group, "seen": cfg.data.val_groups[0], "unseen": cfg.data.val_groups[1]}
    sets = {
        role: EvalDataset(cfg.data.hdf5, g, cfg.data, modalities=cfg.model.modalities,
                          tokenizer=cfg.model.text.tokenizer)
        for role, g in groups.items()
    }  # fmt: skip
    feats = {r: encode_group(model, ds, device=torch.device("cpu"), batch_size=64) for r, ds in sets.items()}
    return evaluate_arrays(
        {"seen": feats["seen"], "unseen": feats["unseen"]},
        feats["key"],
        {"seen": sets["seen"].labels, "unseen": sets["unseen"].labels},
        sets["key"].labels,
        queries=["dna"],
        keys=["text"],
        ks=[1],
        levels=["genus"],
    )


@pytest.mark.slow
def test_loss_decreases_and_retrieval_beats_the_untrained_model(run_a, sample_h5, tmp_path):
    out, result, events = run_a
    assert (result.epochs, result.steps, result.samples, result.stopped) == (2, 56, 448, "finished")
    losses = train_losses(out)
    assert sorted(losses) == list(range(1, 57))
    assert np.mean([losses[s] for s in range(1, 8)]) > 2.0  # about ln(8): chance for a batch of 8

    # the sample's 89 seen species have 1-5 training rows each, so two epochs barely move the loss (about -0.2);
    # a copy of the run resumed to 8 epochs (224 steps, constant lr: the same as 8 epochs straight) learns.
    # Measured on seeds 42 (the preset's), 1, 2, 3: the mean loss of the last 7 steps 0.29, 0.46, 0.38, 0.25
    # (first 7: 2.17-2.23); seen DNA -> text genus top-1 0.41, 0.49, 0.51, 0.69 (untrained: 0.03)
    longer = tmp_path / "a8"
    shutil.copytree(out, longer)
    events8 = Recorder()
    trained = train(learn_config_of(longer, "train.epochs=8"), longer, resume=True, events=events8)
    assert (trained.epochs, trained.steps, trained.stopped) == (8, 224, "finished")
    losses = train_losses(longer)
    assert sorted(losses) == list(range(1, 225))
    first, last = np.mean([losses[s] for s in range(1, 8)]), np.mean([losses[s] for s in range(218, 225)])
    assert last < 0.5 * first, (first, last)

    before = untrained_result(learn_config(sample_h5)).accuracy("dna", "text", "seen", "micro", 1, "genus")
    after = events8.evals[-1][2].accuracy("dna", "text", "seen", "micro", 1, "genus")
    assert before < 0.1  # 39 seen species in 36 genera: chance is about 1/36
    assert after >= before + 0.25, (before, after)  # seed 42: 16 of 39 seen queries in the right genus, 1 before

    # per-epoch evaluation, the selection metric, best/last checkpoints, metrics.jsonl
    assert [(e[0], e[1]) for e in events.evals] == [(1, 28), (2, 56)]
    selections = [e[3]["value"] for e in events.evals]
    assert selections[-1] == pytest.approx(
        np.mean([events.evals[-1][2].accuracy("dna", "text", s, "micro", 1, "genus") for s in ("seen", "unseen")])
    )
    best_epoch = 1 + int(np.argmax(selections))
    assert result.best["epoch"] == best_epoch and result.best["value"] == max(selections)
    best_meta = json.loads((out / "checkpoints/best/meta.json").read_text())
    last_meta = json.loads((out / "checkpoints/last/meta.json").read_text())
    assert (last_meta["epoch"], last_meta["step"], best_meta["epoch"]) == (2, 56, best_epoch)
    eval_lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert [x["step"] for x in eval_lines] == [28, 56]
    assert eval_lines[-1]["results"]["dna|text"] == events.evals[-1][2].to_json()["results"]["dna|text"]
    # the resolved config round-trips, and the parameter table came first
    assert load_run_config(out / "config.yaml") == learn_config(sample_h5)
    assert events.params[-1]["encoder"] == "all" and events.params[-1]["trainable"] == events.params[-1]["total"]


@pytest.mark.slow
def test_one_epoch_then_resume_equals_two_epochs(run_a, run_b_epoch1, tmp_path):
    a, _, _ = run_a
    b = tmp_path / "b"
    shutil.copytree(run_b_epoch1[0], b)
    assert json.loads((b / "checkpoints/last/meta.json").read_text())["step"] == 28
    events = Recorder()
    result = train(learn_config_of(b, "train.epochs=2"), b, resume=True, events=events)
    assert (result.epochs, result.steps) == (2, 56)
    assert any("resuming" in m and "epoch 2, batch 0" in m for m in events.messages)
    assert_same_weights(a / "checkpoints/last", b / "checkpoints/last")
    assert_same_weights(a / "checkpoints/best", b / "checkpoints/best")
    assert train_losses(a) == train_losses(b)  # every logged loss, bit for bit, and no step logged twice


@pytest.mark.slow
def test_resume_mid_epoch_continues_with_exactly_the_remaining_batches(run_b_epoch1, sample_h5, tmp_path):
    m = tmp_path / "m"
    first = train(learn_config(sample_h5, "train.epochs=1", "train.max_steps=11"), m)
    assert (first.steps, first.stopped) == (11, "max_steps")
    progress = json.loads((m / "checkpoints/resume/progress.json").read_text())
    assert (progress["epoch"], progress["batch"], progress["step"]) == (0, 11, 11)
    result = train(learn_config_of(m, "train.max_steps=null"), m, resume=True)
    assert (result.epochs, result.steps) == (1, 28)
    assert_same_weights(run_b_epoch1[0] / "checkpoints/last", m / "checkpoints/last")
    assert train_losses(m) == train_losses(run_b_epoch1[0])
    again = train(learn_config_of(m), m, resume=True)
    assert (again.stopped, again.steps) == ("already complete", 28)


def learn_config_of(run, *sets):
    from bioclip_cli.workflows.train import resume_config

    return resume_config(run, sets=list(sets))


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(run_b_epoch1, tmp_path):
    c = tmp_path / "c"
    shutil.copytree(run_b_epoch1[0], c)
    last_before = (c / "checkpoints/last/model.safetensors").read_bytes()
    state_before = (c / "checkpoints/resume/progress.json").read_text()
    events = Recorder()
    # 1e39 overflows float32: the logits become +-inf and the loss NaN at the first step after the resume
    cfg = learn_config_of(c, "train.epochs=2", "model.logit_scale=1e39")
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 29 \(epoch 2, batch 1 of 28\)") as info:
        train(cfg, c, resume=True, events=events)
    assert "from step 28 (epoch 1) are kept unchanged" in info.value.message
    assert "grad_clip" in info.value.hint and "--resume" in info.value.hint
    assert any("model.logit_scale" in m for m in events.messages)  # warned about the changed setting
    assert (c / "checkpoints/last/model.safetensors").read_bytes() == last_before
    assert (c / "checkpoints/resume/progress.json").read_text() == state_before


def test_untrained_presets_and_single_modality_refuse_to_train(sample_h5, tmp_path):
    with pytest.raises(ConfigError, match="untrained baseline") as info:
        train(load_config("none-5m"), tmp_path / "x")
    assert info.value.hint == "embed it instead: bioclip embed --preset none-5m"
    cfg = learn_config(sample_h5)
    one = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, modalities=["dna"]))
    with pytest.raises(ConfigError, match="at least two modalities"):
        train(one, tmp_path / "y")


@pytest.mark.parametrize("tracker", ["wandb", "tensorboard"])
def test_report_to_a_tracker_that_is_not_installed_says_how_to_get_it(sample_h5, tmp_path, tracker):
    import importlib.util

    if importlib.util.find_spec(tracker) is not None:
        pytest.skip(f"{tracker} is installed here")
    with pytest.raises(ConfigError, match=f"--report-to {tracker} needs the {tracker} package") as info:
        train(learn_config(sample_h5, f"train.report_to=[{tracker}]"), tmp_path / "r")
    assert f"bioscan-clip[{tracker}]" in info.value.hint


def test_a_cosine_run_resumed_with_other_epochs_is_refused(sample_h5, tmp_path):
    """The cosine schedule spans all the run's steps (T_max): more epochs would change the lr of steps taken."""
    result = train(learn_config(sample_h5, "train.scheduler=cosine", "train.batch_size=64", "train.epochs=1"),
                   tmp_path / "cos")  # fmt: skip
    assert result.steps == 3  # 224 rows // 64
    with pytest.raises(ConfigError, match=r"the cosine schedule of .* spans 3 steps; .* it would span 6") as info:
        train(learn_config_of(tmp_path / "cos", "train.epochs=2"), tmp_path / "cos", resume=True)
    assert info.value.hint == "resume with the run's own train.epochs and train.max_steps"
    assert json.loads((tmp_path / "cos/checkpoints/resume/progress.json").read_text())["step"] == 3  # untouched


@pytest.mark.slow
def test_v2_recipe_with_every_optimisation_option(sample_h5, tmp_path):
    """AdamW + one-cycle (lr x global batch / reference), learned temperature, gathered loss, bf16 autocast,
    gradient accumulation, clipping and checkpointing, all at once: the run trains and records what it did."""
    cfg = learn_config(
        sample_h5,
        "train.optimizer=adamw", "train.weight_decay=0.01", "train.scheduler=onecycle", "train.lr=5e-5",
        "train.lr_reference_batch=4", "model.learn_logit_scale=true", "train.loss=gathered", "train.precision=bf16",
        "train.grad_accum=2", "train.grad_clip=1.0", "train.grad_checkpointing=true", "train.max_steps=4",
    )  # fmt: skip
    result = train(cfg, tmp_path / "v2")
    assert (result.steps, result.samples, result.stopped) == (4, 64, "max_steps")
    records = [json.loads(x) for x in (tmp_path / "v2/metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in records if r["type"] == "train"]
    peak = 5e-5 * 16 / 4  # global batch 8 x 2 accumulated = 16; reference 4
    lrs = [r["lr"] for r in train_lines]  # after each step's scheduler step: warm-up over 30% of 4 steps
    expected = torch.optim.lr_scheduler.OneCycleLR(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak), max_lr=peak, total_steps=4,
        pct_start=0.3, div_factor=25.0,
    )  # fmt: skip
    want = []
    for _ in range(4):
        expected.optimizer.step()
        expected.step()
        want.append(expected.get_last_lr()[0])
    assert lrs == pytest.approx(want)
    assert train_lines[-1]["logit_scale"] != pytest.approx(1 / 0.07, abs=1e-7)  # the temperature is learned
    assert all(np.isfinite(r["loss"]) for r in train_lines)
    saved = weights(tmp_path / "v2/checkpoints/last")
    assert "log_logit_scale" in saved
    # a one-cycle schedule cannot be stretched on resume: the steps already taken followed the old one
    with pytest.raises(ConfigError, match="one-cycle schedule of .* spans 4 steps; .* it would span 6"):
        train(learn_config_of(tmp_path / "v2", "train.max_steps=6"), tmp_path / "v2", resume=True)
