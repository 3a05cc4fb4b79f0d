"""Issue 16, faults 6 and 10: downloads without a checksum are format-checked; a refused connection fails fast."""

from __future__ import annotations

import io
import os
import socket
import time

import pytest
import torch
from conftest import run_cli
from download_server import FileServer

ASPIS = "/projects/bioscan/"
CKPT = ASPIS + "BIOSCAN_CLIP_for_downloading/ckpt/bioscan_clip/trained_with_bioscan_5m/image_dna_text.pth"
BERT = ASPIS + "clip_project/ckpt/BarcodeBERT/model_41.pth"
HUB = "/bioscan-ml/clibd/resolve/main/ckpt/bioscan_clip/ver_1_0/bioscan_5m/image_dna_text_4gpu/best.pth"
QUICK = {"BIOCLIP_DOWNLOAD_RETRIES": "2", "BIOCLIP_DOWNLOAD_BACKOFF": "0.01", "BIOCLIP_DOWNLOAD_TIMEOUT": "5",
         "COLUMNS": "500"}  # fmt: skip
HTML = b"<html><body>Service unavailable</body></html>"[:40]


def pth(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def barcodebert_pth() -> bytes:
    return pth({"bert.embeddings.word_embeddings.weight": torch.zeros(4, 2), "cls.predictions.bias": torch.zeros(4)})


def bioscan_clip_pth() -> bytes:
    return pth({"image_encoder.lora_vit.cls_token": torch.zeros(1, 1, 2), "logit_scale": torch.zeros(())})


@pytest.fixture
def server():
    with FileServer() as srv:
        yield srv


def one_error(proc) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.mark.slow
def test_an_html_page_served_as_checkpoints_is_refused_and_not_kept_as_present(server, tmp_path):
    assert len(HTML) == 40
    server.add(BERT, HTML)
    server.add(CKPT, HTML)
    args = ("download", "checkpoints", "--preset", "idt-5m", "--root", str(tmp_path), "--mirror", server.base)
    proc = run_cli(*args, env=QUICK)
    bert = tmp_path / "ckpt/BarcodeBERT/5_mer/model_41.pth"
    ckpt = tmp_path / "ckpt/bioscan_clip/trained_with_bioscan_5m/image_dna_text.pth"
    line = one_error(proc)
    assert "2 of 2 downloads failed" in line and "is not a PyTorch checkpoint (it starts with '<html>" in line
    assert not bert.exists() and not ckpt.exists()
    assert bert.with_name("model_41.pth.bad").read_bytes() == HTML  # kept for a look, never under the final name

    server.add(BERT, barcodebert_pth())
    server.add(CKPT, bioscan_clip_pth())
    again = run_cli(*args, env=QUICK)
    assert again.returncode == 0, again.stderr
    assert "format-checked: a BarcodeBERT checkpoint" in again.stdout
    assert "format-checked: a BIOSCAN-CLIP checkpoint" in again.stdout
    assert "2 file(s) in place" in again.stderr and "(0 verified, 2 format-checked, 0 unverified)" in again.stderr
    assert bert.read_bytes() == barcodebert_pth()


def test_a_garbage_file_already_in_place_is_fetched_again(server, tmp_path):
    bert = tmp_path / "ckpt/BarcodeBERT/5_mer/model_41.pth"
    bert.parent.mkdir(parents=True)
    bert.write_bytes(HTML)  # accepted as "present" by an earlier version
    server.add(BERT, barcodebert_pth())
    args = ("download", "checkpoints", "--preset", "none-5m", "--root", str(tmp_path), "--mirror", server.base)
    proc = run_cli(*args, env=QUICK)
    assert proc.returncode == 0, proc.stderr
    assert bert.read_bytes() == barcodebert_pth()
    assert len(server.gets(BERT)) == 1


def test_a_state_dict_of_the_wrong_model_or_a_pickled_class_is_refused(tmp_path):
    from bioclip_cli.errors import DataError
    from bioclip_cli.models.file_format import check_format

    part = tmp_path / "x.part"
    part.write_bytes(pth({"encoder.layer.0.weight": torch.zeros(2)}))
    with pytest.raises(DataError, match="not of BIOSCAN-CLIP or BarcodeBERT: its keys are encoder.layer.0.weight"):
        check_format(part, tmp_path / "model_41.pth")
    part.write_bytes(pth({"bert.x": torch.zeros(2), "optimizer": io.BytesIO()}))  # needs a class to unpickle
    with pytest.raises(DataError, match=r"the file downloaded for .*model_41.pth is not a PyTorch checkpoint"):
        check_format(part, tmp_path / "model_41.pth")


@pytest.mark.slow
def test_a_hub_file_without_a_readable_sha256_is_an_error_unless_allowed(server, tmp_path):
    server.add(HUB, bioscan_clip_pth(), headers={"X-Repo-Commit": "0" * 40})  # no sha256 etag
    server.add(BERT, barcodebert_pth())
    env = {**QUICK, "HF_HUB_OFFLINE": "0"}
    args = ("download", "checkpoints", "--preset", "idt-5m-clibd", "--root", str(tmp_path), "--mirror", server.base)
    line = one_error(run_cli(*args, env=env))
    assert "gives no readable sha256" in line and "cannot be verified" in line
    dest = tmp_path / "ckpt/bioscan_clip/ver_1_0/bioscan_5m/image_dna_text_4gpu/best.pth"
    assert not dest.exists()
    allowed = run_cli(*args, "--allow-unverified", env=env)
    assert allowed.returncode == 0, allowed.stderr
    assert "format-checked: a BIOSCAN-CLIP checkpoint" in allowed.stdout and dest.read_bytes() == bioscan_clip_pth()


def test_format_checks_of_hdf5_and_json(tmp_path):
    import h5py

    from bioclip_cli.errors import DataError
    from bioclip_cli.models.file_format import check_format

    good = tmp_path / "a.part"
    with h5py.File(good, "w") as f:
        f.create_group("seen"), f.create_group("key")
    assert check_format(good, tmp_path / "extracted_feature_from_val_split.hdf5") == "an extracted-embedding file"
    with pytest.raises(DataError, match="without the group.s. all_keys of a BIOSCAN dataset"):
        check_format(good, tmp_path / "BIOSCAN_5M.hdf5")
    page = tmp_path / "b.part"
    page.write_bytes(HTML)
    with pytest.raises(DataError, match=r"labels_val.json is not a JSON file \(it starts with '<html>"):
        check_format(page, tmp_path / "labels_val.json")
    page.write_bytes(b'{"seen_gt_dict": []}')
    assert check_format(page, tmp_path / "labels_val.json") == "a JSON object"


def test_a_refused_connection_fails_fast_with_one_message_and_no_part_file(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"BIOCLIP_DOWNLOAD_RETRIES": "5", "BIOCLIP_DOWNLOAD_BACKOFF": "1", "COLUMNS": "500"}  # the defaults
    start = time.monotonic()
    proc = run_cli("download", "checkpoints", "--preset", "idt-5m", "--root", str(tmp_path),
                   "--mirror", f"http://127.0.0.1:{port}", env=env)  # fmt: skip
    elapsed = time.monotonic() - start
    line = one_error(proc)
    assert elapsed < 15, elapsed  # was 31 s of backoff per file
    assert line.count("cannot reach") == 1 and "gave up after 1 retry" in line
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    assert os.listdir(tmp_path) in ([], ["ckpt"])
