"""Issue 16, faults 2, 4 and the output cases of 11: outputs land where the user meant, whole or not at all."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from bioclip_cli.data.embedding_file import write_embedding_file

LEVELS = ("order", "family", "genus", "species")


def embedding_files(root: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    feats, labels = {}, {}
    for group, rows in (("seen", 12), ("unseen", 8), ("key", 20)):
        feats[group] = {m: rng.standard_normal((rows, 4)).astype(np.float32) for m in ("image", "dna", "text")}
        labels[group] = {lv: [f"{lv}{i % 3}" for i in range(rows)] for lv in LEVELS}
    return write_embedding_file(root / "emb", "val", feats, labels)


def one_error(result, *fragments) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    return errors[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_eval_json_through_a_symlink_writes_the_target_and_keeps_the_link(tmp_path):
    h5, labels = embedding_files(tmp_path)
    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(real.name)
    result = run_cli("eval", "--embeddings", str(h5), "--labels", str(labels), "--json", str(link))
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == "real.json"
    assert '"results"' in real.read_text()
    assert leftovers(tmp_path) == []


def device_node(folder: Path) -> Path:
    """A character device like /dev/full, made in `folder` (never the system's own: a regression of the fix
    would replace the device by a regular file)."""
    node = folder / "full"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except (PermissionError, OSError):
        pytest.skip("making a device node needs root (CAP_MKNOD)")
    return node


def test_eval_json_to_a_device_or_fifo_is_refused_and_they_stay(tmp_path):
    h5, labels = embedding_files(tmp_path)
    device = device_node(tmp_path)
    result = run_cli("eval", "--embeddings", str(h5), "--labels", str(labels), "--json", str(device))
    one_error(result, f"{device} is not a regular file", "refusing to replace it")
    assert stat.S_ISCHR(os.stat(device).st_mode)
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    one_error(run_cli("eval", "--embeddings", str(h5), "--labels", str(labels), "--json", str(fifo), timeout=60),
              f"{fifo} is not a regular file")  # fmt: skip
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_folder_as_the_output_is_one_sentence_before_any_work(tmp_path):
    h5, labels = embedding_files(tmp_path)
    folder = tmp_path / "out"
    folder.mkdir()
    one_error(run_cli("eval", "--embeddings", str(h5), "--labels", str(labels), "--json", str(folder)),
              f"{folder} is a folder", "give a file name inside it")  # fmt: skip
    one_error(run_cli("inspect", str(h5), "--json", str(folder)), f"{folder} is a folder")
    one_error(run_cli("predict", "x.jpg", "--run", "nowhere", "--output", str(folder)), f"{folder} is a folder")
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("target", ["/proc/nonexist/x.json", "/sys/x.json"])
def test_unwritable_places_are_one_sentence(tmp_path, target):
    h5, labels = embedding_files(tmp_path)
    line = one_error(run_cli("eval", "--embeddings", str(h5), "--labels", str(labels), "--json", target), target)
    assert "cannot write" in line or "no permission" in line


def test_a_failed_write_names_the_bytes_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    from bioclip_cli.atomic_write import OutputError, write_text

    target = tmp_path / "out.json"
    target.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError) as err:
        write_text(target, "hello")
    assert str(err.value) == f"No space left on device writing {target} (5 bytes needed)"
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_eval_on_a_full_disk_exits_1_with_one_sentence(tmp_path, monkeypatch, capsys):
    from bioclip_cli.cli.app import main

    h5, labels = embedding_files(tmp_path)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "r.json"
    with pytest.raises(SystemExit) as code:
        main(["eval", "--embeddings", str(h5), "--labels", str(labels), "--json", str(out)])
    assert code.value.code == 1
    err = capsys.readouterr().err
    assert f"No space left on device writing {out}" in err and "unexpected" not in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_an_embedding_file_written_through_a_symlink_keeps_the_link(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (tmp_path / "emb").mkdir()
    link = tmp_path / "emb/extracted_feature_from_val_split.hdf5"
    link.symlink_to(store / "val.hdf5")
    h5, _ = embedding_files(tmp_path)
    assert link.is_symlink() and (store / "val.hdf5").is_file()
    import h5py

    with h5py.File(link, "r") as f:
        assert f["key/encoded_image_feature"].shape == (20, 4)


# ------------------------------------------------------------------------------------------ fault 4: embed


def embed_plan(sample_h5, out):
    from bioclip_cli.workflows.embed import plan_embedding

    return plan_embedding(preset="tiny", sets=[f"data.hdf5={sample_h5}"], out=out)


def test_embed_refuses_early_when_the_disk_cannot_hold_the_file(sample_h5, tmp_path, monkeypatch):
    import shutil

    from bioclip_cli.atomic_write import OutputError
    from bioclip_cli.workflows import embed as embed_module

    built = []
    monkeypatch.setattr(embed_module, "build_embedding_model", lambda *a: built.append(a))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 372_000, 372_000))
    with pytest.raises(OutputError, match=r"No space left on device writing .*extracted_feature_from_val_split.hdf5 "
                                          r"\([\d,]+ bytes needed, 372,000 free\)"):  # fmt: skip
        embed_module.embed(embed_plan(sample_h5, tmp_path / "r"))
    assert built == []  # refused before the model was even built
    assert not list((tmp_path / "r/embeddings").glob("*.partial"))


def test_embed_disk_full_mid_write_removes_the_partial_and_says_one_sentence(sample_h5, tmp_path, monkeypatch):
    import torch

    from bioclip_cli.atomic_write import OutputError
    from bioclip_cli.data import embedding_file
    from bioclip_cli.workflows.embed import embed

    torch.set_num_threads(1)

    def full(self, *args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(embedding_file.GroupWriter, "_write_rows", full)
    with pytest.raises(OutputError) as err:
        embed(embed_plan(sample_h5, tmp_path / "r"), batch_size=64)
    h5 = tmp_path / "r/embeddings/extracted_feature_from_val_split.hdf5"
    assert str(err.value).startswith(f"No space left on device writing {h5} (")
    assert str(err.value).endswith(" bytes needed)")
    assert sorted(p.name for p in (tmp_path / "r/embeddings").iterdir()) == ["embed_val.json"]
