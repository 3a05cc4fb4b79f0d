"""`bioclip embed` -> `bioclip eval` on the bundled sample: the published layout, exact numbers, float64, reruns."""

from __future__ import annotations

import json
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch
from conftest import run_cli

from bioclip_cli.config import load_config, save_config
from bioclip_cli.data.datasets import EvalDataset
from bioclip_cli.errors import BioclipError, ConfigError, DataError
from bioclip_cli.models.encode import build_embedding_model, encode_group
from bioclip_cli.retrieval.evaluation import evaluate_arrays, evaluate_embeddings
from bioclip_cli.workflows import embed as embed_module
from bioclip_cli.workflows.embed import embed, embedding_fingerprint, plan_embedding

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
ROLES = {"seen": "val_seen", "unseen": "val_unseen", "key": "all_keys"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The same single-threaded kernels here and in the `bioclip` subprocesses: bit-identical embeddings."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_run(sample_h5, tmp_path_factory):
    """A run directory as `bioclip train` leaves it (config.yaml, checkpoints/best and last), made without
    training: the tiny preset's seeded random model, with `last` differing from `best` in one head."""
    from bioclip_cli.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("embed")
    run = root / "runs" / "tiny"
    cfg = load_config("tiny", sets=[f"data.hdf5={sample_h5}"])
    save_config(cfg, run / "config.yaml")
    model = build_embedding_model(cfg, None)
    save_checkpoint(model, run / "checkpoints" / "best", config=cfg)
    with torch.no_grad():
        model.image.head.bias.add_(0.5)
    save_checkpoint(model, run / "checkpoints" / "last", config=cfg)
    return run, cfg


def in_memory(cfg, checkpoint):
    """The embeddings of the three groups, computed here, and the labels of each."""
    model = build_embedding_model(cfg, checkpoint)
    out = {}
    for role, group in ROLES.items():
        ds = EvalDataset(cfg.data.hdf5, group, cfg.data, modalities=cfg.model.modalities,
                         tokenizer=cfg.model.text.tokenizer)  # fmt: skip
        out[role] = (encode_group(model, ds, device=torch.device("cpu"), batch_size=cfg.eval.batch_size), ds)
    return out


@pytest.mark.slow
def test_embed_then_eval_round_trip_matches_the_in_memory_evaluation(tiny_run, tmp_path):
    run, cfg = tiny_run
    result = run_cli("embed", "--run", str(run), env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    assert f"Next: bioclip eval --run {run}" in result.stderr
    h5_path = run / "embeddings" / "extracted_feature_from_val_split.hdf5"
    labels_path = run / "embeddings" / "labels_val.json"

    mem = in_memory(cfg, run / "checkpoints" / "best")
    labels = json.loads(labels_path.read_text())
    with h5py.File(h5_path, "r") as f:
        assert sorted(f) == ["key", "seen", "unseen"]
        for role, (feats, ds) in mem.items():
            g = f[role]
            n = len(ds)
            for name, modality in (("encoded_image_feature", "image"), ("encoded_dna_feature", "dna"),
                                   ("encoded_language_feature", "text")):  # fmt: skip
                assert g[name].dtype == np.float32 and g[name].shape == (n, 16)
                assert np.array_equal(g[name][()], feats[modality]), (role, name)
            assert np.array_equal(g["averaged_feature"][()], (feats["image"] + feats["dna"]) / 2)
            assert np.array_equal(g["concatenated_feature"][()], np.concatenate([feats["image"], feats["dna"]], 1))
            assert g["sample_ids"].asstr()[()].tolist() == ds.sample_ids.tolist()
            assert labels[f"{role}_gt_dict"] == ds.label_dicts()
        stacked = np.concatenate([mem["key"][0][m] for m in ("image", "dna", "text")])
        assert np.array_equal(f["key/all_key_features"][()], stacked)
        assert "all_key_features" not in f["seen"]

    out_json = tmp_path / "eval.json"
    result = run_cli("eval", "--run", str(run), "--json", str(out_json), env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    from_file = json.loads(out_json.read_text())
    expected = evaluate_arrays(
        {"seen": mem["seen"][0], "unseen": mem["unseen"][0]},
        mem["key"][0],
        {"seen": mem["seen"][1].labels, "unseen": mem["unseen"][1].labels},
        mem["key"][1].labels,
    )
    assert len(from_file["results"]) == 21  # I+D+T: every query x key pair of equal width
    assert from_file["results"] == expected.to_json()["results"]
    assert from_file["n_queries"] == {"seen": 39, "unseen": 36} and from_file["n_keys"] == 203


@pytest.mark.slow
def test_float64_files_hold_the_same_values_and_give_the_same_metrics(tiny_run, tmp_path):
    run, _ = tiny_run
    r32 = embed(plan_embedding(run=run, out=tmp_path / "f32"))
    r64 = embed(plan_embedding(run=run, out=tmp_path / "f64"), dtype="float64")
    with h5py.File(r32.h5_path, "r") as a, h5py.File(r64.h5_path, "r") as b:
        for role in ROLES:
            for name in a[role]:
                if name == "sample_ids":
                    continue
                assert b[role][name].dtype == np.float64
                assert np.array_equal(b[role][name][()], a[role][name][()].astype(np.float64)), (role, name)
    info = json.loads((tmp_path / "f64" / "embeddings" / "embed_val.json").read_text())
    assert (info["dtype"], info["complete"], info["source"]) == ("float64", True, "run")
    e32 = evaluate_embeddings(r32.h5_path, r32.labels_path, queries=["image", "avg"], keys=["dna", "all"])
    e64 = evaluate_embeddings(r64.h5_path, r64.labels_path, queries=["image", "avg"], keys=["dna", "all"])
    assert e32.scores == e64.scores


@pytest.mark.slow
def test_rerun_skips_complete_groups_and_a_new_source_starts_over(tiny_run, tmp_path, monkeypatch):
    run, _ = tiny_run
    out = tmp_path / "r"
    real = embed_module.encode_rows

    def interrupted_at_unseen(model, dataset, **kwargs):
        if dataset.group == "val_unseen":
            raise KeyboardInterrupt
        yield from real(model, dataset, **kwargs)

    monkeypatch.setattr(embed_module, "encode_rows", interrupted_at_unseen)
    with pytest.raises(KeyboardInterrupt):
        embed(plan_embedding(run=run, out=out))
    monkeypatch.setattr(embed_module, "encode_rows", real)
    assert not (out / "embeddings" / "extracted_feature_from_val_split.hdf5").exists()

    resumed = embed(plan_embedding(run=run, out=out))
    assert (resumed.skipped, resumed.encoded) == (["seen"], ["unseen", "key"])
    again = embed(plan_embedding(run=run, out=out))
    assert (again.skipped, again.encoded) == (["seen", "unseen", "key"], [])

    reference = embed(plan_embedding(run=run, out=tmp_path / "ref"))
    with h5py.File(resumed.h5_path, "r") as a, h5py.File(reference.h5_path, "r") as b:
        for role in ROLES:
            for name in b[role]:
                assert np.array_equal(a[role][name][()], b[role][name][()]), (role, name)

    other = embed(plan_embedding(run=run, which="last", out=out))  # other weights: everything again
    assert other.encoded == ["seen", "unseen", "key"]
    with h5py.File(other.h5_path, "r") as a, h5py.File(reference.h5_path, "r") as b:
        assert not np.array_equal(a["seen/encoded_image_feature"][()], b["seen/encoded_image_feature"][()])
        assert np.array_equal(a["seen/encoded_dna_feature"][()], b["seen/encoded_dna_feature"][()])


@pytest.mark.slow
def test_checkpoint_with_preset_and_preset_alone(tiny_run, sample_h5, tmp_path, monkeypatch):
    run, cfg = tiny_run
    monkeypatch.chdir(tmp_path)
    plan = plan_embedding(checkpoint=run / "checkpoints" / "best", preset="tiny", sets=[f"data.hdf5={sample_h5}"])
    assert plan.out.as_posix() == "runs/tiny-tiny-best" and plan.source == "checkpoint"
    assert plan_embedding(checkpoint=run / "checkpoints" / "best").cfg == cfg  # our folder carries its config

    baseline = plan_embedding(preset="tiny", sets=[f"data.hdf5={sample_h5}"], out=tmp_path / "untrained")
    assert baseline.checkpoint is None and "untrained model" in baseline.description
    result = embed(baseline, split="test")
    assert result.groups == {"seen": "test_seen", "unseen": "test_unseen", "key": "all_keys"}
    assert result.rows == {"seen": 39, "unseen": 36, "key": 203}
    assert (tmp_path / "untrained" / "config.yaml").is_file()  # `bioclip eval --run` and friends find it
    # the seeded random model is the tiny run's `best` (same seed, same heads)
    with h5py.File(result.h5_path, "r") as f:
        key = f["key/encoded_dna_feature"][()]
    assert np.array_equal(key, in_memory(cfg, run / "checkpoints" / "best")["key"][0]["dna"])


def test_group_encoding_merges_lora_and_restores_the_weights(tiny_run, lora_merges):
    _, cfg = tiny_run
    model = build_embedding_model(cfg, None)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)  # as after training: merging changes the weights
    before = {n: t.clone() for n, t in model.state_dict().items()}
    ds = EvalDataset(cfg.data.hdf5, "val_unseen", cfg.data, modalities=cfg.model.modalities,
                     tokenizer=cfg.model.text.tokenizer)  # fmt: skip
    merged = encode_group(model, ds, device=torch.device("cpu"), batch_size=16)
    assert len(lora_merges) == 1
    plain = encode_group(model, ds, device=torch.device("cpu"), batch_size=16, merge_lora=False)
    assert len(lora_merges) == 1
    for m in ("image", "dna", "text"):
        assert merged[m].shape == (36, 16)
        np.testing.assert_allclose(merged[m], plain[m], rtol=0, atol=2e-6)
    assert [n for n, t in model.state_dict().items() if not torch.equal(t, before[n])] == []  # training goes on


@pytest.mark.slow
def test_embed_merges_lora_as_configured(tiny_run, tmp_path, lora_merges):
    run, cfg = tiny_run
    embed(plan_embedding(run=run, out=tmp_path / "merged"))
    assert len(lora_merges) == 1  # once around all three groups
    embed(plan_embedding(run=run, out=tmp_path / "plain", sets=["eval.merge_lora=false"]))
    assert len(lora_merges) == 1
    off = replace(cfg, eval=replace(cfg.eval, merge_lora=False))
    assert embedding_fingerprint(cfg, None, "val", "float32") != embedding_fingerprint(off, None, "val", "float32")
    full = replace(cfg, model=replace(cfg.model, image=replace(cfg.model.image, finetune="full"),
                                      dna=replace(cfg.model.dna, finetune="full"),
                                      text=replace(cfg.model.text, finetune="full")))  # fmt: skip
    full_off = replace(full, eval=off.eval)  # without LoRA, merging changes nothing: the same embeddings
    assert embedding_fingerprint(full, None, "val", "float32") == embedding_fingerprint(
        full_off, None, "val", "float32"
    )


def test_bad_sources_are_clear_errors(tiny_run, tmp_path, monkeypatch):
    run, _ = tiny_run
    monkeypatch.chdir(run.parent.parent)
    with pytest.raises(BioclipError, match="nothing to embed"):
        plan_embedding()
    with pytest.raises(DataError, match=r"runs/nope does not exist \(runs in runs/: tiny\)"):
        plan_embedding(run="runs/nope")
    with pytest.raises(BioclipError, match="do not combine it with --checkpoint/--preset"):
        plan_embedding(run=run, preset="tiny")
    pth = tmp_path / "weights.pth"
    pth.write_bytes(b"")
    with pytest.raises(ConfigError, match="needs --preset") as info:
        plan_embedding(checkpoint=pth)
    assert "--preset idt-5m" in info.value.hint
    with pytest.raises(BioclipError, match="holds a trained run") as info:
        plan_embedding(preset="tiny")  # runs/tiny is trained: no untrained embeddings into it
    assert f"bioclip embed --run {run.relative_to(run.parent.parent)}" in info.value.hint
    with pytest.raises(DataError, match="no best checkpoint"):
        (run.parent / "empty" / "checkpoints").mkdir(parents=True)
        save_config(load_config("tiny"), run.parent / "empty" / "config.yaml")
        plan_embedding(run="runs/empty")


def test_cli_errors_are_one_line(tiny_run, tmp_path):
    run, _ = tiny_run
    result = run_cli("embed", "--run", str(run), "--split", "train", env=ONE_THREAD)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")] == [
        "Error: --split must be val or test, got 'train'"
    ]
    result = run_cli("embed", cwd=tmp_path)
    assert result.returncode == 1 and "Error: nothing to embed" in result.stderr and "Traceback" not in result.stderr
