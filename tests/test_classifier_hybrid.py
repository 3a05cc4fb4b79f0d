"""finetune-classifier (loss, sorted classes, exact resume) and `eval --hybrid one|two` on the demo run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import run_cli
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


def _copy(demo_run, dest):
    assert demo_run["result"].returncode == 0, demo_run["result"].stderr
    shutil.copytree(demo_run["out"], dest, ignore=shutil.ignore_patterns("baseline", "data", "resume", "classifier"))
    return dest


@pytest.fixture(scope="module")
def classifier_runs(demo_run, tmp_path_factory):
    """Two copies of the demo run: `two` trained 2 epochs in one go (through the CLI), `resumed` 1 + 1."""
    from bioclip_cli.pipelines.demo import torch_threads
    from bioclip_cli.workflows.classifier import finetune_classifier, plan_classifier

    root = tmp_path_factory.mktemp("classifier")
    two, resumed = _copy(demo_run, root / "two"), _copy(demo_run, root / "resumed")
    cli = run_cli("finetune-classifier", "--run", str(two), "--epochs", "2", "--batch-size", "16",
                  "--format", "json", env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    # the same intra-op thread count as the CLI's OMP_NUM_THREADS=1: CPU kernels split their sums by thread,
    # so a run on 1 thread and one on 2 differ in the last bits however exact the resume is
    with torch_threads(1):
        first = finetune_classifier(plan_classifier(run=resumed), epochs=1, batch_size=16)
        second = finetune_classifier(plan_classifier(run=resumed), epochs=2, batch_size=16, resume=True)
    return {"two": two, "resumed": resumed, "summary": json.loads(cli.stdout), "first": first, "second": second}


def test_loss_decreases_and_classes_are_the_sorted_seen_species(classifier_runs, demo_run):
    from bioclip_cli.config import load_run_config
    from bioclip_cli.data.hdf5 import BioscanH5

    summary = classifier_runs["summary"]
    losses = [row["loss"] for row in summary["epochs_run"]]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert summary["group"] == "seen_keys" and summary["classes"] == 89 and summary["steps"] == 2 * (154 // 16)
    info = json.loads((classifier_runs["two"] / "classifier/checkpoints/best/classes.json").read_text())
    from bioclip_cli.errors import DataError
    from bioclip_cli.workflows.classifier import training_group

    with BioscanH5(load_run_config(classifier_runs["two"] / "config.yaml").data.hdf5) as h5:
        tax = h5.group("seen_keys").taxonomy()
        assert training_group(h5, None, "5m") == "seen_keys" and training_group(h5, "val_seen") == "val_seen"
        with pytest.raises(DataError, match="trainval"):  # INSECT trains on trainval, which the sample lacks
            training_group(h5, None, "insect")
    assert info["classes"] == sorted(set(tax["species"].tolist()))
    first = {s: g for s, g in zip(tax["species"], tax["genus"])}
    assert info["taxonomy"]["genus"] == [first[s] for s in info["classes"]]
    steps = [
        json.loads(line) for line in (classifier_runs["two"] / "classifier/metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in steps if r["type"] == "train"] == list(range(1, 19))


def test_one_epoch_plus_a_resumed_one_equals_two_epochs(classifier_runs):
    a = load_file(str(classifier_runs["two"] / "classifier/checkpoints/last/model.safetensors"))
    b = load_file(str(classifier_runs["resumed"] / "classifier/checkpoints/last/model.safetensors"))
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        assert (a[name] == b[name]).all(), name
    assert classifier_runs["second"].epochs == 2 and classifier_runs["second"].steps == 18
    second_epoch = classifier_runs["summary"]["epochs_run"][1]["loss"]  # rounded to 5 decimals in the summary
    assert classifier_runs["second"].epoch_losses[0] == pytest.approx(second_epoch, abs=1e-5)


def test_ctrl_c_stops_after_the_step_and_a_resume_equals_two_epochs(classifier_runs, demo_run, tmp_path, monkeypatch):
    """A Ctrl-C during step 3 of epoch 1 stops after that step with a resumable state; resuming to 2 epochs
    ends with the weights of the uninterrupted run, bit for bit, and epoch 1's loss covers all its steps."""
    import os
    import signal

    from bioclip_cli.errors import Interrupted
    from bioclip_cli.pipelines.demo import torch_threads
    from bioclip_cli.workflows import classifier
    from bioclip_cli.workflows.classifier import finetune_classifier, plan_classifier

    run = _copy(demo_run, tmp_path / "stopped")
    write = classifier.MetricsLog.write

    def write_then_ctrl_c(self, record):
        write(self, record)
        if record["type"] == "train" and record["step"] == 3:  # as if the user pressed Ctrl-C during step 3
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(classifier.MetricsLog, "write", write_then_ctrl_c)
    with torch_threads(1), pytest.raises(Interrupted) as stopped:
        finetune_classifier(plan_classifier(run=run), epochs=2, batch_size=16)
    assert "stopped the classifier at step 3 (epoch 1, batch 3 of 9)" in stopped.value.message
    assert stopped.value.exit_code == 130 and "--resume" in stopped.value.hint
    progress = json.loads((run / "classifier/checkpoints/resume/progress.json").read_text())
    assert (progress["epoch"], progress["batch"], progress["step"]) == (0, 3, 3)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back

    monkeypatch.setattr(classifier.MetricsLog, "write", write)
    with torch_threads(1):
        resumed = finetune_classifier(plan_classifier(run=run), epochs=2, batch_size=16, resume=True)
    assert resumed.epochs == 2 and resumed.steps == 18
    a = load_file(str(classifier_runs["two"] / "classifier/checkpoints/last/model.safetensors"))
    b = load_file(str(run / "classifier/checkpoints/last/model.safetensors"))
    assert a.keys() == b.keys() and all((a[name] == b[name]).all() for name in a)
    straight = [row["loss"] for row in classifier_runs["summary"]["epochs_run"]]  # rounded to 5 decimals
    assert resumed.epoch_losses == pytest.approx(straight, abs=1e-5)
    lines = [json.loads(line) for line in (run / "classifier/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["type"] == "train"] == list(range(1, 19))  # every step once
    assert [r["epoch"] for r in lines if r["type"] == "train"][:4] == pytest.approx([1 / 9, 2 / 9, 3 / 9, 4 / 9])


def test_method_two_uses_the_classifier(classifier_runs):
    """tau = 0: every rank answers from the classifier (softmax > 0), so seen top-1 = the classifier's own
    accuracy; tau = 1: every rank answers from image->DNA search among the unseen keys."""
    import torch

    from bioclip_cli.config import load_run_config
    from bioclip_cli.data.datasets import EvalDataset
    from bioclip_cli.models.classifier import load_classifier
    from bioclip_cli.models.encode import build_embedding_model, encode_rows
    from bioclip_cli.workflows.hybrid_eval import evaluate_hybrid_run

    run = classifier_runs["two"]
    cfg = load_run_config(run / "config.yaml")
    clf = load_classifier(run / "classifier/checkpoints/best", build_embedding_model(cfg, run / "checkpoints/best"))
    ds = EvalDataset(cfg.data.hdf5, "test_seen", cfg.data, modalities=["image"])
    logits = np.concatenate([f["image"] for _, f in encode_rows(clf, ds, device=torch.device("cpu"), batch_size=64)])
    own = float(np.mean(np.asarray(clf.classes)[logits.argmax(1)] == ds.labels["species"]))

    all_a = evaluate_hybrid_run(run, "two", tau=0.0, device="cpu")
    cell = all_a["results"]["image|hybrid-two"]
    assert cell["seen"]["micro"]["1"]["species"] == pytest.approx(own)
    assert cell["unseen"]["micro"]["1"]["species"] == 0.0  # only seen species come from the classifier
    assert all_a["hybrid"]["applied_to"] == "test" and all_a["n_keys"]["classes"] == 89
    all_b = evaluate_hybrid_run(run, "two", tau=1.0, device="cpu")["results"]["image|hybrid-two"]
    assert all_b["seen"]["micro"]["1"]["species"] == 0.0  # only unseen species come from the DNA keys
    chosen = evaluate_hybrid_run(run, "two", device="cpu")
    assert chosen["hybrid"]["grid_points"] == 1001 and chosen["hybrid"]["tau"] in np.linspace(0, 1, 1001)


def test_eval_hybrid_one_cli_json(classifier_runs):
    run = classifier_runs["resumed"]
    result = run_cli("eval", "--run", str(run), "--hybrid", "one", "--format", "json", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    h = out["hybrid"]
    assert h["method"] == "one" and h["grid_points"] == 1000 and h["applied_to"] == "test"
    assert h["tau"] == h["val_best_tau"] and h["tau"] in np.linspace(0, 1, 1000)
    assert out["n_queries"] == {"seen": 39, "unseen": 36} and out["n_keys"] == {"unseen": 49, "seen": 154}
    cell = out["results"]["image|hybrid-one"]
    hm = cell["harmonic_mean"]["micro"]["1"]["species"]
    s, u = cell["seen"]["micro"]["1"]["species"], cell["unseen"]["micro"]["1"]["species"]
    assert hm == pytest.approx(0 if s * u == 0 else 2 * s * u / (s + u))
    assert json.loads((run / "results/hybrid_one.json").read_text()) == out
    missing = run_cli("eval", "--run", str(classifier_runs["two"].parent / "nope"), "--hybrid", "two")
    assert missing.returncode != 0 and "does not exist" in missing.stderr
