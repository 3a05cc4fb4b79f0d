"""`inspect` on our dataset files (with a leaked unseen species) and on an embedding file in the published layout."""

from __future__ import annotations

import json

import h5py
import numpy as np
from conftest import run_cli

from bioclip_cli.data.hdf5 import BioscanH5
from bioclip_cli.data.hdf5_writer import write_groups
from bioclip_cli.workflows.inspect import inspect_file


def test_inspect_sample_dataset(sample_h5):
    summary = inspect_file(sample_h5)
    assert summary["kind"] == "dataset" and summary["warnings"] == []
    rows = {r["group"]: r for r in summary["groups"]}
    reader = BioscanH5(sample_h5).group("val_seen")
    sizes = reader.image_lengths()
    lengths = [len(s) for s in reader.barcodes()]
    val = rows["val_seen"]
    assert val["rows"] == 39 and val["species"] == 39 and val["genera"] == 36
    assert (val["jpeg_min"], val["jpeg_max"]) == (sizes.min(), sizes.max())
    assert val["jpeg_mean"] == round(float(sizes.mean()), 1)
    assert (val["barcode_min"], val["barcode_max"]) == (min(lengths), max(lengths))
    assert val["language_tokens"] is True and val["id_column"] == "processid"
    assert rows["no_split_and_seen_train"]["species"] == 89  # pretrain rows have no species
    checks = {(c["check"], c["where"]): c["status"] for c in summary["checks"]}
    assert checks[("unseen species not in seen keys", "val_unseen")] == "ok"
    assert checks[("query species among keys", "val_seen")] == "ok"


def leaky_file(path):
    def group(species):
        n = len(species)
        return {
            "image": [b"\xff\xd8\xff" + bytes(10 + i) + b"\xff\xd9" for i in range(n)],
            "barcode": ["ACGT"] * n,
            "processid": [f"P{i}" for i in range(n)],
            "order": ["Diptera"] * n,
            "family": ["Culicidae"] * n,
            "genus": [s.split()[0] for s in species],
            "species": species,
        }

    return write_groups(
        path,
        {
            "seen_keys": group(["Culex pipiens", "Aedes vexans"]),
            "all_keys": group(["Culex pipiens", "Aedes vexans", "Culex territans"]),
            "val_seen": group(["Culex pipiens", "Anopheles walkeri"]),
            "val_unseen": group(["Culex territans", "Aedes vexans"]),
        },
    )


def test_inspect_warns_about_leaks_and_missing_keys(tmp_path):
    summary = inspect_file(leaky_file(tmp_path / "leaky.hdf5"))
    assert any("1 val_unseen species are among the seen_keys" in w and "Aedes vexans" in w for w in summary["warnings"])
    assert any("1 of 2 val_seen species are missing from all_keys" in w for w in summary["warnings"])
    assert len(summary["warnings"]) == 2


def embedding_file(path, nan: bool = False):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for group, n in (("seen", 5), ("unseen", 4), ("key", 6)):
            g = f.create_group(group)
            for name in ("encoded_image_feature", "encoded_dna_feature", "averaged_feature"):
                x = rng.normal(size=(n, 8))
                g[name] = x / np.linalg.norm(x, axis=1, keepdims=True)
            g["concatenated_feature"] = rng.normal(size=(n, 16)).astype(np.float32)
            if group == "key":
                g["all_key_features"] = np.ones((3 * n, 8)) * 0.5
        if nan:
            f["seen"]["averaged_feature"][1, 2] = np.nan
    return path


def test_inspect_embedding_file(tmp_path):
    summary = inspect_file(embedding_file(tmp_path / "extracted_feature_from_val_split.hdf5"))
    assert summary["kind"] == "embedding" and summary["warnings"] == []
    rows = {(r["group"], r["dataset"]): r for r in summary["groups"]}
    image = rows[("seen", "encoded_image_feature")]
    assert image["shape"] == "5x8" and image["dtype"] == "float64" and image["nan"] == 0
    assert abs(image["norm_mean"] - 1) < 1e-9 and abs(image["norm_min"] - 1) < 1e-9
    assert rows[("key", "all_key_features")]["shape"] == "18x8"
    assert rows[("key", "all_key_features")]["norm_max"] == round(np.sqrt(8 * 0.25), 6)
    assert rows[("unseen", "concatenated_feature")]["dtype"] == "float32"
    bad = inspect_file(embedding_file(tmp_path / "nan.hdf5", nan=True))
    assert bad["warnings"] == ["seen/averaged_feature has 1 NaN values"]


def test_inspect_cli_table_json_and_errors(sample_h5, tmp_path):
    out = tmp_path / "summary.json"
    ok = run_cli("inspect", str(sample_h5), "--json", str(out))
    assert ok.returncode == 0, ok.stderr
    assert "val_unseen" in ok.stdout and "checks" in ok.stdout
    data = json.loads(out.read_text())
    assert data["kind"] == "dataset" and {g["group"] for g in data["groups"]} >= {"val_seen", "all_keys"}
    warn = run_cli("inspect", str(leaky_file(tmp_path / "leaky.hdf5")))
    assert warn.returncode == 0 and "Warning:" in warn.stderr and "Aedes vexans" in warn.stderr
    for path in (tmp_path / "missing.hdf5", tmp_path / "summary.json"):
        bad = run_cli("inspect", str(path))
        assert bad.returncode != 0
        errors = [line for line in bad.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and str(path) in errors[0] and "Traceback" not in bad.stderr
