"""INSECT end to end on the synthetic raw release: build-hdf5 insect -> train (tiny) -> embed --format bzsl-csv.

Checks the files the BZSL side reads: orientation ([d x N] images, [d x C] DNA class means), the row order
(res101 order of the stored rows), the number format (numpy savetxt ``%.18e``) and the class means.
"""

from __future__ import annotations

import importlib.util
import json
import re

import h5py
import insect_release as ir
import numpy as np
import pytest
from conftest import run_cli

from bioclip_cli.data.insect_table import read_insect_metadata
from bioclip_cli.workflows.build_hdf5 import build_hdf5, insect_metadata_path

INSECT_SETS = ["data.train_group=train", "data.key_group=all_keys", "data.val_groups=[test_seen,test_unseen]",
               "data.test_groups=[test_seen,test_unseen]"]  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The synthetic raw release built, trained on (tiny, 3 steps) and exported with --format bzsl-csv."""
    tmp_path = tmp_path_factory.mktemp("insect_pipeline")
    t = ir.write_raw(tmp_path / "release")
    h5 = tmp_path / "INSECT.hdf5"
    build_hdf5("insect", tmp_path / "release", h5, text_tokenizer="bioclip-sample")
    run = tmp_path / "run"
    sets = [arg for s in [f"data.hdf5={h5}", *INSECT_SETS] for arg in ("--set", s)]
    train = run_cli("train", "--preset", "tiny", *sets, "--max-steps", "3", "--batch-size", "7", "--out", str(run))
    assert train.returncode == 0, train.stderr
    embed = run_cli("embed", "--run", str(run), "--format", "bzsl-csv")
    assert embed.returncode == 0, embed.stderr
    assert f"bioclip zsl --run {run}" in embed.stderr
    return t, h5, run


@pytest.mark.slow
def test_build_train_embed_bzsl_csv(exported):
    t, h5, run = exported
    bzsl = run / "embeddings" / "bzsl"
    assert sorted(p.name for p in bzsl.iterdir()) == [
        "INSECT_metadata.csv",
        "dna_embedding_from_bioscan_clip.csv",
        "image_embedding_from_bioscan_clip.csv",
    ]
    kept = [i for i in range(ir.N_ROWS) if i not in (ir.MISSING_ROW, ir.CORRUPT_ROW)]
    table = read_insect_metadata(bzsl / "INSECT_metadata.csv")
    assert table.ids == [t["ids"][i] for i in kept]  # res101 order, bad rows left out
    assert (bzsl / "INSECT_metadata.csv").read_text() == insect_metadata_path(h5).read_text()

    image_text = (bzsl / "image_embedding_from_bioscan_clip.csv").read_text().splitlines()
    assert len(image_text) == 16  # d rows (the tiny preset's output_dim) ...
    assert all(len(line.split(",")) == len(kept) for line in image_text)  # ... of N columns
    number = re.compile(r"-?\d\.\d{18}e[+-]\d{2}")
    assert all(number.fullmatch(v) for v in image_text[0].split(","))
    image = np.loadtxt(bzsl / "image_embedding_from_bioscan_clip.csv", delimiter=",")
    dna_means = np.loadtxt(bzsl / "dna_embedding_from_bioscan_clip.csv", delimiter=",")
    assert image.shape == (16, len(kept)) and dna_means.shape == (16, len(ir.SPECIES))
    np.testing.assert_allclose(np.linalg.norm(image, axis=0), 1.0, atol=1e-5)  # L2-normalised columns

    with h5py.File(run / "embeddings" / "insect_embeddings.hdf5", "r") as f:
        img, dna, labels = f["image"][()], f["dna"][()], f["labels"][()]
        assert f["insect_row"][()].tolist() == kept
        np.testing.assert_array_equal(f["dna_class_mean"][()], dna_means.T)
    np.testing.assert_array_equal(image, img.T.astype(np.float64))  # %.18e keeps float32 values exactly
    assert labels.tolist() == t["labels"][kept].tolist()
    for c in range(len(ir.SPECIES)):
        np.testing.assert_allclose(dna_means[:, c], dna[labels == c].astype(np.float64).mean(axis=0), rtol=1e-12)

    # the image embeddings are the model's, row for row: the same rows encoded here directly
    from bioclip_cli.config import load_config
    from bioclip_cli.data.datasets import EvalDataset
    from bioclip_cli.models.encode import build_embedding_model, encode_group

    cfg = load_config(str(run / "config.yaml"))
    model = build_embedding_model(cfg, run / "checkpoints" / "best")
    direct = encode_group(model, EvalDataset(h5, "all_keys", cfg.data, modalities=["image", "dna"]), device=model.device
                          if hasattr(model, "device") else __import__("torch").device("cpu"), batch_size=64)  # fmt: skip
    np.testing.assert_allclose(direct["image"], img, atol=1e-5)
    np.testing.assert_allclose(direct["dna"], dna, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("bioclip_cli.workflows.zsl") is None, reason="no `bioclip zsl` here")
def test_zsl_runs_on_the_export(exported, tmp_path):
    _, _, run = exported
    out = tmp_path / "zsl.json"
    proc = run_cli("zsl", "--run", str(run), "--pca-dim", "8", "--format", "json", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert set(result) >= {"seen_acc", "unseen_acc", "harmonic_mean", "parameters"}
    assert all(0.0 <= result[k] <= 1.0 for k in ("seen_acc", "unseen_acc", "harmonic_mean"))
    assert set(result["parameters"]) == {"k0", "k1", "m", "s", "K"}
