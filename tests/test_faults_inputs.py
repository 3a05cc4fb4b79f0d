"""Issue 16, faults 9, 11 and 12: hostile or mistaken inputs get one sentence with a hint, quickly."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml
from conftest import run_cli


def one_error(result, *fragments) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert "Hint:" in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    return errors[0]


# --------------------------------------------------------------------------------------- fault 9: configs


def test_config_from_dev_zero_is_refused_at_once(tmp_path):
    result = run_cli("train", "--config", "/dev/zero", cwd=tmp_path, timeout=60)
    one_error(result, "/dev/zero is not a regular file")


def test_config_from_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "cfg.yaml"
    os.mkfifo(fifo)
    result = run_cli("train", "--config", str(fifo), cwd=tmp_path, timeout=60)
    one_error(result, f"{fifo} is not a regular file")


def test_an_oversized_config_is_refused_naming_the_limit(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("description: " + "x" * (2 << 20) + "\n")
    result = run_cli("train", "--config", str(big), cwd=tmp_path, timeout=60)
    one_error(result, f"{big} is 2,097,166 bytes; a configuration file may be at most 1,048,576")


def test_configs_are_parsed_with_the_c_loader_when_available(tmp_path, monkeypatch):
    from bioclip_cli.config import loader

    if not hasattr(yaml, "CSafeLoader"):
        pytest.skip("PyYAML was built without libyaml")
    used = []
    real = yaml.load

    def spy(stream, Loader):  # noqa: N803 - PyYAML's argument name
        used.append(Loader)
        return real(stream, Loader=Loader)

    monkeypatch.setattr(yaml, "load", spy)
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 3}\n")
    assert loader.load_config("tiny", [path]).train.epochs == 3
    assert used and set(used) == {yaml.CSafeLoader}


# ------------------------------------------------------------------------------- fault 11: config mistakes


def test_config_that_is_a_folder_is_one_sentence(tmp_path):
    one_error(run_cli("train", "--config", str(tmp_path), cwd=tmp_path), f"{tmp_path} is a folder, not a YAML file")


def test_base_that_is_not_a_name_is_one_sentence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("base: 5\n")
    one_error(
        run_cli("train", "--config", str(path), cwd=tmp_path), "base must be a preset name or a list", "base: demo"
    )


# ---------------------------------------------------------------------------------- fault 12: garbled text


LEVELS = ("order", "family", "genus", "species")


def test_labels_whose_group_is_not_a_list_of_rows_is_one_clear_sentence(tmp_path):
    from bioclip_cli.data.embedding_file import write_embedding_file

    rng = np.random.default_rng(0)
    feats = {g: {m: rng.standard_normal((n, 4)).astype(np.float32) for m in ("image", "dna", "text")}
             for g, n in (("seen", 6), ("unseen", 4), ("key", 10))}  # fmt: skip
    labels = {g: {lv: ["a"] * len(feats[g]["image"]) for lv in LEVELS} for g in feats}
    h5, labels_path = write_embedding_file(tmp_path / "e", "val", feats, labels)
    data = json.loads(labels_path.read_text())
    data["seen_gt_dict"] = "x"
    labels_path.write_text(json.dumps(data))
    line = one_error(run_cli("eval", "--embeddings", str(h5), "--labels", str(labels_path)), "seen_gt_dict")
    assert "string indices" not in line and "lacks the level" not in line
    assert "must be a list of rows" in line


def test_inspect_on_a_folder_says_it_is_a_folder(tmp_path):
    one_error(run_cli("inspect", str(tmp_path)), f"{tmp_path} is a folder")
