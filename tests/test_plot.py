"""`bioclip plot`: the figure files (format, size, not blank), the data drawn, and the demo run's figures."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from bioclip_cli.errors import BioclipError
from bioclip_cli.figures.embedding_map import project
from bioclip_cli.figures.retrieval_grid import match_level
from bioclip_cli.figures.style import figure_format
from bioclip_cli.workflows.plot import filter_rows, parse_within, plot_map

SCREEN_MAP = (1000, 620)  # 10 in x 6.2 in at 100 dpi
COLUMN_MAP = (1050, 840)  # 3.5 in x 2.8 in at 300 dpi


def not_blank(path) -> float:
    with Image.open(path) as img:
        return float(np.asarray(img.convert("L"), dtype=np.float64).std())


# ------------------------------------------------------------------------------------------- no run


def test_within_and_top_filter_values():
    assert parse_within("order=Diptera, family=Sciaridae") == {"order": "Diptera", "family": "Sciaridae"}
    for bad in ("Diptera", "tribe=X", "order="):
        with pytest.raises(BioclipError, match="is not LEVEL=NAME"):
            parse_within(bad)
    labels = {
        "order": np.array(["D", "D", "D", "D", "D", "L", "D"]),
        "genus": np.array(["a", "b", "b", "c", "not_classified", "b", "a"]),
    }
    rows, ranked = filter_rows(labels, {"order": "D"}, "genus", top=2)
    assert ranked == [("a", 2), ("b", 2)] and rows.tolist() == [0, 1, 2, 6]  # ties by name; L and unknown left out
    with pytest.raises(BioclipError, match="no query has that order") as info:
        filter_rows(labels, {"order": "Odonata"}, "genus", top=2)
    assert "D" in info.value.hint


def test_match_levels_and_formats():
    q = {"genus": "Aedes", "species": "Aedes vexans"}
    assert match_level(q, {"genus": "Aedes", "species": "Aedes vexans"}) == "species"
    assert match_level(q, {"genus": "Aedes", "species": "Aedes cinereus"}) == "genus"
    assert match_level(q, {"genus": "Culex", "species": "Culex pipiens"}) == "none"
    unknown = {"genus": "not_classified", "species": "not_classified"}
    assert match_level(unknown, unknown) == "none"
    assert [figure_format(f"f.{e}") for e in ("png", "PDF", "svg")] == ["png", "pdf", "svg"]
    with pytest.raises(BioclipError, match="cannot tell the figure format"):
        figure_format("f.jpg")


def test_pca_projection_is_deterministic_and_centred():
    x = np.random.default_rng(0).normal(size=(40, 8))
    a, b = project(x, "pca"), project(x[::-1].copy(), "pca")[::-1]
    assert a.shape == (40, 2) and np.allclose(a, b) and np.allclose(a.mean(axis=0), 0, atol=1e-12)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    var = np.var(unit - unit.mean(axis=0), axis=0).sum()
    assert np.var(a, axis=0).sum() <= var and np.var(a[:, 0]) >= np.var(a[:, 1])


def test_error_and_warning_text_keep_their_brackets(capsys):
    from bioclip_cli.cli import output

    output.error("--method umap needs umap", 'pip install "bioscan-clip[plots]"')
    output.warning('no UMAP (pip install "bioscan-clip[plots]")')
    err = capsys.readouterr().err
    assert err.count('"bioscan-clip[plots]"') == 2


# ------------------------------------------------------------------------------------------ on the demo run


def _labels(demo_run, group: str) -> dict:
    raw = json.loads((demo_run["out"] / "embeddings" / "labels_val.json").read_text())[f"{group}_gt_dict"]
    return {lv: np.array([r[lv] for r in raw]) for lv in ("order", "family", "genus", "species")}


@pytest.mark.slow
def test_map_file_size_points_and_determinism(demo_run, tmp_path):
    out = demo_run["out"]
    png = tmp_path / "map.png"
    res = run_cli("plot", "map", "--run", str(out), "--method", "pca", "--group", "key", "--level", "genus",
                  "--within", "order=Diptera", "--top", "5", "--out", str(png))  # fmt: skip
    assert res.returncode == 0, res.stderr
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size == SCREEN_MAP
    assert not_blank(png) > 5
    record = json.loads(png.with_suffix(".json").read_text())
    labels = _labels(demo_run, "key")
    diptera = labels["genus"][labels["order"] == "Diptera"]
    top = sorted(Counter(diptera).items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert [(t["taxon"], t["rows"]) for t in record["taxa"]] == top
    assert record["n_rows"] == sum(n for _, n in top) and record["modalities"] == ["image", "dna", "text"]
    assert record["n_points"] == 3 * record["n_rows"] == len(record["points"])
    assert {p["taxon"] for p in record["points"]} == {t for t, _ in top}
    # the same inputs and seed give the same bytes (in-process call, column size, PDF and SVG too)
    first = plot_map(tmp_path / "a.png", run=out, method="pca", size="column")
    again = plot_map(tmp_path / "b.png", run=out, method="pca", size="column")
    assert first.figure.read_bytes() == again.figure.read_bytes()
    with Image.open(first.figure) as img:
        assert img.size == COLUMN_MAP
    seen = _labels(demo_run, "seen")["species"]
    assert first.record["n_rows"] == sum(sorted(Counter(seen).values(), reverse=True)[:10])
    pdf = plot_map(tmp_path / "m.pdf", run=out, method="pca").figure.read_bytes()
    assert pdf.startswith(b"%PDF-") and plot_map(tmp_path / "n.pdf", run=out, method="pca").figure.read_bytes() == pdf
    svg = plot_map(tmp_path / "m.svg", run=out, method="pca").figure.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and 'width="720pt"' in svg


@pytest.mark.slow
def test_map_without_umap_says_how_to_get_it(demo_run, tmp_path):
    shim = tmp_path / "shim" / "umap"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('raise ImportError("No module named umap (test shim)")\n')
    import os

    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(shim.parent), os.environ.get("PYTHONPATH", "")]))}
    out = demo_run["out"]
    res = run_cli("plot", "map", "--run", str(out), "--method", "umap", "--out", str(tmp_path / "u.png"), env=env)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "--method umap needs the umap package" in res.stderr
    assert 'pip install "bioscan-clip[plots]"' in res.stderr and "--method pca" in res.stderr
    assert not (tmp_path / "u.png").exists() and not (tmp_path / "u.json").exists()
    res = run_cli("plot", "map", "--run", str(out), "--out", str(tmp_path / "d.png"), env=env)  # default: pca
    assert res.returncode == 0, res.stderr
    assert "umap-learn is not installed" in res.stderr
    assert json.loads((tmp_path / "d.json").read_text())["method"] == "pca"


@pytest.mark.slow
def test_retrieval_grid_matches_the_runs_search(demo_run, tmp_path):
    from bioclip_cli.data.embedding_file import read_embedding_file
    from bioclip_cli.retrieval.search import FlatIndex

    out = demo_run["out"]
    png = tmp_path / "r.png"
    res = run_cli("plot", "retrieval", "--run", str(out), "--query", "image", "--key", "dna", "--group", "unseen",
                  "--n", "4", "--k", "3", "--seed", "7", "--out", str(png), "--format", "json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert [r["path"] for r in json.loads(res.stdout)] == [str(png), str(png.with_suffix(".json"))]
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] == 1000
    assert not_blank(png) > 5
    record = json.loads(png.with_suffix(".json").read_text())
    ef = read_embedding_file(out / "embeddings" / "extracted_feature_from_val_split.hdf5",
                             out / "embeddings" / "labels_val.json")  # fmt: skip
    with ef:
        queries = ef.features["unseen"]["encoded_image_feature"]
        keys = ef.features["key"]["encoded_dna_feature"]
        rows = [e["query_row"] for e in record["examples"]]
        assert rows == sorted(np.random.default_rng(7).choice(len(queries), 4, replace=False).tolist())
        scores, found = FlatIndex(keys, device="cpu").search(queries[rows], 3)
        for example, ids, sims in zip(record["examples"], found, scores):
            assert example["query_id"] == ef.sample_ids["unseen"][example["query_row"]]
            assert [k["key_row"] for k in example["keys"]] == ids.tolist()
            assert [k["key_id"] for k in example["keys"]] == ef.sample_ids["key"][ids].tolist()
            assert np.allclose([k["similarity"] for k in example["keys"]], sims, atol=1e-6)
            for k in example["keys"]:
                assert k["taxonomy"]["species"] == ef.labels["key"]["species"][k["key_row"]]
                assert k["match"] == match_level(example["taxonomy"], k["taxonomy"])
    # the chosen ids instead of a seeded choice, and a wrong id in one sentence
    wanted = record["examples"][1]["query_id"]
    res = run_cli("plot", "retrieval", "--run", str(out), "--group", "unseen", "--ids", wanted, "--out",
                  str(tmp_path / "one.svg"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert [e["query_id"] for e in json.loads((tmp_path / "one.json").read_text())["examples"]] == [wanted]
    res = run_cli("plot", "retrieval", "--run", str(out), "--ids", "NOPE-1", "--out", str(tmp_path / "x.png"))
    assert res.returncode == 1 and "NOPE-1 not among the queries" in res.stderr


@pytest.mark.slow
def test_curves_and_accuracy(demo_run, tmp_path):
    from bioclip_cli.workflows.plot import plot_accuracy, plot_curves

    out = demo_run["out"]
    curves = plot_curves(tmp_path / "c.png", runs=[out, out])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["type"] == "train"]
    evals = [r for r in records if r["type"] == "eval"]
    assert len(curves.record["series"]) == 2  # overlaid (the second named by its path)
    series = next(iter(curves.record["series"].values()))
    assert series["loss"] == [r["loss"] for r in train] and series["step"] == [r["step"] for r in train]
    assert np.allclose(series["temperature"], [1 / r["logit_scale"] for r in train])
    assert series["accuracy"]["unseen"]["genus"] == [
        r["results"]["image|dna"]["unseen"]["micro"]["1"]["genus"] for r in evals
    ]
    assert not_blank(curves.figure) > 5
    acc = plot_accuracy(tmp_path / "a.pdf", run=out, per_class=True, size="column")
    assert acc.figure.read_bytes().startswith(b"%PDF-")
    saved = json.loads((out / "results" / "eval_val.json").read_text())["results"]
    bars = acc.record["bars"]["image|dna"]
    assert bars["unseen"] == [
        saved["image|dna"]["unseen"]["micro"]["1"][lv] for lv in ("order", "family", "genus", "species")
    ]
    tail = acc.record["per_class"]["classes"]
    assert {r["split"] for r in tail} == {"seen", "unseen"}
    assert all(r["n_train"] == 0 for r in tail if r["split"] == "unseen")  # unseen species: no training rows
    assert all(r["n_train"] >= 1 for r in tail if r["split"] == "seen")
    res = run_cli("plot", "accuracy", "--run", str(out), "--query", "dna", "--out", str(tmp_path / "z.png"))
    assert res.returncode == 1 and "one --key per --query" in res.stderr


@pytest.mark.slow
def test_demo_wrote_its_figures(demo_run):
    figures = demo_run["out"] / "figures"
    for name in ("map", "retrieval", "curves"):
        with Image.open(figures / f"{name}.png") as img:
            assert img.format == "PNG" and img.size[0] == 1000
        assert not_blank(figures / f"{name}.png") > 5
        assert json.loads((figures / f"{name}.json").read_text())["kind"] == name


@pytest.mark.slow
def test_umap_map_uses_the_originals_settings(demo_run, tmp_path):
    pytest.importorskip("umap", reason="umap-learn (the plots extra) is not installed")
    result = plot_map(tmp_path / "u.png", run=demo_run["out"], method="umap", group="key", level="genus")
    assert result.record["method"] == "umap" and result.record["n_points"] == 3 * result.record["n_rows"]
    again = plot_map(tmp_path / "v.png", run=demo_run["out"], method="umap", group="key", level="genus")
    assert [p["x"] for p in again.record["points"]] == [p["x"] for p in result.record["points"]]  # random_state 0
