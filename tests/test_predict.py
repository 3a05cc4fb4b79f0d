"""`bioclip predict`: inputs prepared like the evaluation's, nearest keys, consensus, per-input failures."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
from conftest import run_cli

from bioclip_cli.data.fasta import barcode_problem, clean_barcode, read_fasta
from bioclip_cli.data.sample import sample_root
from bioclip_cli.errors import BioclipError, DataError
from bioclip_cli.retrieval.consensus import consensus
from bioclip_cli.workflows.predict import ROW_COLUMNS, collect_inputs, predict

VAL_IMAGE = sample_root() / "bioscan5m" / "images" / "cropped_256" / "val" / "ABCAD272-09.jpg"
REAL_PHOTO = "bioscan1m_repo/images/5580278_Coleoptera.jpg"  # 2880x2160 JPEG of a real beetle (CBG, CC BY 3.0)


# ------------------------------------------------------------------------------------------ pure parts


def _n(sim, order="O", family="F", genus="G", species="S"):
    return {"similarity": sim, "order": order, "family": family, "genus": genus, "species": species}


def test_consensus_majority_then_similarity_then_rank():
    neighbors = [
        _n(0.9, species="a"),
        _n(0.8, species="b"),
        _n(0.7, species="b", genus="not_classified"),
        _n(0.6, species="a"),
        _n(0.5, species="c", genus="not_classified"),
    ]
    c = consensus(neighbors)
    assert c["order"] == {"label": "O", "votes": 5, "similarity": 3.5}
    assert c["genus"] == {"label": "G", "votes": 3, "similarity": 2.3}  # not_classified neighbours do not vote
    # a and b: 2 votes each and equal summed similarity (0.9 + 0.6 = 0.8 + 0.7): the nearer neighbour's label wins
    assert c["species"] == {"label": "a", "votes": 2, "similarity": 1.5}
    c = consensus([_n(0.9, species="a"), _n(0.8, species="b"), _n(0.75, species="b")])  # votes beat similarity
    assert c["species"] == {"label": "b", "votes": 2, "similarity": 1.55}
    c = consensus([_n(0.9, species="x"), _n(0.85, species="y"), _n(0.5, species="z"), _n(0.8, species="y"),
                   _n(0.7, species="x")])  # fmt: skip
    assert c["species"]["label"] == "y"  # 2 votes each: y 1.65 > x 1.60
    c = consensus([_n(0.9, genus="not_classified"), _n(0.8, genus="not_classified")])
    assert c["genus"] == {"label": "not_classified", "votes": 0, "similarity": 0.0}


def test_read_fasta(tmp_path):
    path = tmp_path / "b.fasta"
    path.write_text("; a comment\n>s1 Aus bus\nACGT\nacgt\n\n>s2\nNNNN ACGT\n>\nAC\n")
    records = read_fasta(path)
    assert [(r.id, r.description, r.sequence, r.line) for r in records] == [
        ("s1", "Aus bus", "ACGTacgt", 2),
        ("s2", "", "NNNNACGT", 6),
        ("record-3", "", "AC", 8),
    ]
    (tmp_path / "bad.fasta").write_text("ACGT\n>x\nACGT\n")
    with pytest.raises(DataError, match="line 1: sequence data before the first '>' header"):
        read_fasta(tmp_path / "bad.fasta")
    (tmp_path / "empty.fasta").write_text("\n\n")
    with pytest.raises(DataError, match="holds no FASTA record"):
        read_fasta(tmp_path / "empty.fasta")
    with pytest.raises(DataError, match="does not exist"):
        read_fasta(tmp_path / "missing.fasta")


def test_barcode_checks():
    assert clean_barcode(" acg t\nNN ") == "ACGTNN"
    assert barcode_problem("ACGTAACGTA") is None
    assert barcode_problem("NNNNNACGTA") is None  # the second 5-mer is informative
    assert barcode_problem("") == "the sequence is empty"
    assert "'X', 'Z' (first at position 5)" in barcode_problem("ACGTXXZZ")
    assert "no 5-mer" in barcode_problem("NACGTANNNN")  # ACGTA exists, but not at a k-mer boundary
    assert "no 5-mer" in barcode_problem("NNNNN" + "ACGTA", max_len=5)  # beyond max_len the model reads nothing
    assert barcode_problem("RYSWKMBDH-ACGTA") is None  # IUPAC codes and gaps are accepted (unknown k-mers)


def test_collect_inputs_pairs_in_order(tmp_path):
    fasta = tmp_path / "b.fasta"
    fasta.write_text(">f1\nACGT\n")
    qs = collect_inputs(["a.jpg", "b.jpg"], ["AAAAA"], fasta)
    assert [(q.name, q.feature, q.dna) for q in qs] == [
        ("a.jpg + dna #1", "avg", "AAAAA"),
        ("b.jpg + f1", "avg", "ACGT"),
    ]
    assert [q.feature for q in collect_inputs(["a.jpg"])] == ["image"]
    assert [(q.name, q.feature) for q in collect_inputs(dna=["A", "C"])] == [("dna #1", "dna"), ("dna #2", "dna")]
    with pytest.raises(BioclipError, match="2 photograph\\(s\\) and 1 barcode\\(s\\)"):
        collect_inputs(["a.jpg", "b.jpg"], ["AAAAA"])
    with pytest.raises(BioclipError, match="nothing to identify"):
        collect_inputs()


# ------------------------------------------------------------------------------------- on the demo run


@pytest.fixture(scope="module")
def key_specimen(demo_run, tmp_path_factory):
    """Row 0 of the demo's key group: its photograph (written as a file), barcode, id and species."""
    from bioclip_cli.data.hdf5 import BioscanH5

    assert demo_run["result"].returncode == 0, demo_run["result"].stderr[-2000:]
    with BioscanH5(demo_run["out"] / "data" / "BIOSCAN_5M_sample.hdf5") as h5:
        g = h5.group("all_keys")
        image = tmp_path_factory.mktemp("key") / "key0.jpg"
        image.write_bytes(g.image_bytes(0))
        return {"image": image, "barcode": g.string("barcode", 0), "id": g.sample_ids([0])[0],
                "species": g.taxonomy([0])["species"][0]}  # fmt: skip


@pytest.mark.slow
def test_key_photograph_finds_itself(demo_run, key_specimen, lora_merges):
    result = predict(demo_run["out"], [key_specimen["image"]], k=3)
    assert len(lora_merges) == 1  # embedded with LoRA merged, as `bioclip embed` embedded the keys
    (p,) = result.predictions
    assert p.ok and (p.query, p.key) == ("image", "image")
    top = p.neighbors[0]
    # prepared exactly like the exported key embeddings: the same vector comes back, cosine 1
    assert top["sample_id"] == key_specimen["id"] and top["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert top["species"] == key_specimen["species"]
    assert [n["rank"] for n in p.neighbors] == [1, 2, 3]
    sims = [n["similarity"] for n in p.neighbors]
    assert sims == sorted(sims, reverse=True)
    assert result.n_keys == 203 and result.failed == [] and result.notes == []


@pytest.mark.slow
def test_key_barcode_and_pair(demo_run, key_specimen):
    seq = key_specimen["barcode"]
    result = predict(demo_run["out"], dna=[seq.lower()], k=5)  # lower case is upper-cased, as the keys were
    (p,) = result.predictions
    assert p.ok and (p.query, p.key) == ("dna", "dna")
    assert p.neighbors[0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert key_specimen["id"] in [n["sample_id"] for n in p.neighbors if n["similarity"] > 1 - 1e-5]
    assert p.neighbors[0]["species"] == key_specimen["species"]
    both = predict(demo_run["out"], [key_specimen["image"]], [seq], k=5).predictions[0]
    assert both.ok and (both.query, both.key) == ("avg", "avg")
    assert both.neighbors[0]["sample_id"] == key_specimen["id"]
    assert both.neighbors[0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    cross = predict(demo_run["out"], [key_specimen["image"]], k=2, key="all").predictions[0]
    assert cross.key == "all" and cross.neighbors[0]["sample_id"] == f"{key_specimen['id']} (image)"


@pytest.mark.slow
def test_mixed_inputs_fail_one_by_one(demo_run, realdata, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"this is not a JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(VAL_IMAGE.read_bytes()[:3000])
    photos = [realdata / REAL_PHOTO, VAL_IMAGE, corrupt, truncated, tmp_path / "missing.jpg"]
    result = predict(demo_run["out"], photos, k=4)
    ok = {p.input: p for p in result.predictions if p.ok}
    assert set(ok) == {str(realdata / REAL_PHOTO), str(VAL_IMAGE)}
    key_species = set(json.loads((demo_run["out"] / "embeddings" / "labels_val.json").read_text())["key_gt_dict"][0])
    for p in ok.values():
        assert len(p.neighbors) == 4 and all(-1.0 <= n["similarity"] <= 1.0 + 1e-6 for n in p.neighbors)
        assert set(p.consensus) == key_species
        assert all(1 <= c["votes"] <= 4 for c in p.consensus.values())
    errors = {p.input: p.error for p in result.failed}
    assert "is not an image file" in errors[str(corrupt)]
    assert "damaged image" in errors[str(truncated)]
    assert "does not exist" in errors[str(tmp_path / "missing.jpg")]
    rows = result.rows()
    assert [r["rank"] for r in rows if r["input"] == str(VAL_IMAGE)] == [1, 2, 3, 4, "consensus"]
    assert sum(r["status"] == "failed" for r in rows) == 3

    bad_dna = predict(demo_run["out"], dna=["ACGTXYZ", "NNNNNNNNNN", "ACGTA" * 10], k=2)
    assert [p.ok for p in bad_dna.predictions] == [False, False, True]
    assert "no nucleotide codes" in bad_dna.predictions[0].error and "no 5-mer" in bad_dna.predictions[1].error


@pytest.mark.slow
def test_predict_cli_formats_and_exit_codes(demo_run, key_specimen, tmp_path):
    run = str(demo_run["out"])
    res = run_cli("predict", str(key_specimen["image"]), "--run", run, "--k", "3")
    assert res.returncode == 0, res.stderr
    assert key_specimen["id"] in res.stdout and "consensus (votes)" in res.stdout
    assert re.search(r"\([123]/3\)", res.stdout)  # votes out of k=3 (how many agree depends on the training)

    fasta = tmp_path / "b.fasta"
    fasta.write_text(f">good\n{key_specimen['barcode']}\n>bad\nACGT-XYZ\n")
    res = run_cli("predict", "--dna-fasta", str(fasta), "--run", run, "--k", "2", "--format", "csv",
                  "--output", str(tmp_path / "p.json"))  # fmt: skip
    assert res.returncode == 1
    assert res.stderr.count("Error:") == 1 and "Traceback" not in res.stderr
    assert "1 of 2 input(s) could not be identified (bad)" in res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == ",".join(ROW_COLUMNS) and len(lines) == 1 + 2 + 1 + 1  # header, 2 neighbours, consensus, bad
    assert lines[1].startswith(f"good,good,dna,dna,1,{key_specimen['id']},") and lines[-1].startswith("bad,bad,dna,,,")
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["failed"] == 1 and [p["status"] for p in data["predictions"]] == ["ok", "failed"]
    assert data["predictions"][0]["neighbors"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert data["predictions"][1]["error"].startswith(
        "not a DNA sequence: character(s) 'X', 'Z' (first at position 6)"
    )  # Y is IUPAC (C or T)

    res = run_cli("predict", str(key_specimen["image"]), "--dna", "AAAAA", "--dna", "CCCCC", "--run", run)
    assert res.returncode == 1 and "1 photograph(s) and 2 barcode(s)" in res.stderr
    res = run_cli("predict", str(key_specimen["image"]))
    assert res.returncode == 1 and "Error: --run is required" in res.stderr


@pytest.mark.slow
def test_run_without_embeddings_and_foreign_embeddings(demo_run, key_specimen, tmp_path):
    src = demo_run["out"]
    run = tmp_path / "copy"
    run.mkdir()
    shutil.copy(src / "config.yaml", run / "config.yaml")
    shutil.copytree(src / "checkpoints" / "best", run / "checkpoints" / "best")
    with pytest.raises(DataError, match="has no reference embeddings") as info:
        predict(run, [key_specimen["image"]])
    assert info.value.hint == f"export them first: bioclip embed --run {run}"
    shutil.copytree(src / "embeddings", run / "embeddings")  # copy2: modification times are kept
    assert predict(run, [key_specimen["image"]], k=1).notes == []
    info_path = run / "embeddings" / "embed_val.json"
    meta = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**meta, "checkpoint": str(run / "checkpoints" / "last")}))
    (note,) = predict(run, [key_specimen["image"]], k=1).notes
    assert "exported with the last checkpoint, the queries use best" in note
    info_path.write_text(json.dumps(meta))
    weights = run / "checkpoints" / "best" / "model.safetensors"
    later = (run / "embeddings" / "extracted_feature_from_val_split.hdf5").stat().st_mtime + 60
    os.utime(weights, (later, later))
    result = predict(run, [key_specimen["image"]], k=1)
    assert len(result.notes) == 1 and "changed after the key embeddings were exported" in result.notes[0]
    np.testing.assert_allclose(result.predictions[0].neighbors[0]["similarity"], 1.0, atol=1e-5)
