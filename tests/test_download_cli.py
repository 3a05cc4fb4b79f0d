"""`bioclip download` end to end: the registry, the plan, and the installed CLI against a local server.

The real registry is exercised through `--mirror http://127.0.0.1:PORT`, which fetches the registry's
URL paths from the test server. No test touches the internet.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import run_cli
from download_server import FileServer

from bioclip_cli.data.artifacts import Checksum, list_artifacts, parse_size
from bioclip_cli.errors import BioclipError
from bioclip_cli.workflows import download as wf

# fast retries; a wide console so that table cells (URLs, paths) print on one line
QUICK = {
    "BIOCLIP_DOWNLOAD_RETRIES": "2",
    "BIOCLIP_DOWNLOAD_BACKOFF": "0.01",
    "BIOCLIP_DOWNLOAD_TIMEOUT": "5",
    "COLUMNS": "500",
}
ASPIS = "/projects/bioscan/"
CKPT = ASPIS + "BIOSCAN_CLIP_for_downloading/ckpt/bioscan_clip/trained_with_bioscan_5m/image_dna_text.pth"
BERT = ASPIS + "clip_project/ckpt/BarcodeBERT/model_41.pth"


def pth_bytes(state: dict) -> bytes:
    """A real torch.save file (downloads without a published checksum are format-checked)."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def bert_pth(n: int = 8) -> bytes:
    import torch

    return pth_bytes({"bert.embeddings.word_embeddings.weight": torch.arange(n, dtype=torch.float32)})


def clip_pth(n: int = 8) -> bytes:
    import torch

    return pth_bytes({"image_encoder.lora_vit.cls_token": torch.arange(n, dtype=torch.float32)})


@pytest.fixture
def server():
    with FileServer() as srv:
        yield srv


def assert_one_error_line(proc) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- registry


PUBLISHED_MD5 = {  # the md5s Zenodo publishes (records 11973457 and 8030065)
    "BIOSCAN_5M_Insect_Dataset_metadata_MultiTypes.zip": "ac381b69fafdbaedc2f9cfb89e3571f7",
    "BIOSCAN_5M_cropped_256_eval.zip": "16a997f72a8cd08cbcf7becafe2dda50",
    "BIOSCAN_5M_cropped_256_train.zip": "3f170db5d95610644883dafc73389049",
    "BIOSCAN_5M_cropped_256_pretrain.01.zip": "0e1cfa86dc7fa4d9c10036990992a2dd",
    "BIOSCAN_5M_cropped_256_pretrain.02.zip": "ca3191d307957732e8108121b20a2059",
    "BIOSCAN_Insect_Dataset_metadata.tsv": "dec3bb23870a35e2e13bc17a5809c901",
    "cropped_256.zip": "fe1175815742db14f7372d505345284a",
}


def test_registry_matches_spec():
    arts = list_artifacts()
    by_file = {a.urls[0].rsplit("/", 1)[-1]: a for a in arts if a.urls and "zenodo.org" in a.urls[0]}
    assert {k: by_file[k].checksum.value for k in PUBLISHED_MD5} == PUBLISHED_MD5
    meta = by_file["BIOSCAN_5M_Insect_Dataset_metadata_MultiTypes.zip"]
    csv = "bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv"
    assert meta.check_files == {csv: Checksum("md5", "603020b433ef566946efba7a08dbb23d")}
    assert all(u.startswith("https://") for a in arts for u in a.urls)
    dests = [a.dest for a in arts if a.dest]
    assert len(dests) == len(set(dests))
    hdf5 = {a.name: (a.dest, a.approx_size) for a in arts if a.what == ("hdf5",)}
    assert hdf5 == {
        "bioscan5m-hdf5": ("data/BIOSCAN_5M/BIOSCAN_5M.hdf5", parse_size("190.4 GB")),
        "bioscan1m-hdf5": ("data/BIOSCAN_1M/split_data/BioScan_data_in_splits.hdf5", parse_size("79.7 GB")),
        "insect-images-hdf5": ("data/INSECT/INSECT_images.hdf5", parse_size("2.73 GB")),
    }


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("idt-5m", ["barcodebert-5mer", "bioscan-clip-5m-image-dna-text"]),
        ("id-1m", ["barcodebert-5mer", "bioscan-clip-1m-image-dna"]),
        ("none-1m", ["barcodebert-5mer"]),
        ("idt-5m-clibd", ["barcodebert-5mer", "clibd-5m-image-dna-text"]),
        ("tiny", []),
    ],
)
def test_checkpoints_per_preset(preset, expected):
    assert [p.name for p in wf.plan_downloads("checkpoints", preset=preset)] == expected


def test_embeddings_and_encoders_per_preset(tmp_path):
    plan = wf.plan_downloads("embeddings", preset="idt-1m", root=tmp_path)
    run = tmp_path / "extracted_embedding/bioscan_1m/lora_vit_lora_barcode_bert_lora_bert_ssl_batch_size_400"
    assert [p.dest for p in plan] == [run / "extracted_feature_from_val_split.hdf5", run / "labels_val.json"]
    assert [p.name for p in wf.plan_downloads("encoders", preset="id-5m")] == ["encoder-vit-base-patch16-224"]
    assert len(wf.plan_downloads("encoders", preset="idt-5m")) == 2


def test_mirror_keeps_the_url_paths():
    plan = wf.plan_downloads("5m", what="metadata", mirror="http://mirror.example:8080/")
    assert plan[0].urls == (
        "http://mirror.example:8080/records/11973457/files/BIOSCAN_5M_Insect_Dataset_metadata_MultiTypes.zip",
        "http://mirror.example:8080/datasets/bioscan-ml/BIOSCAN-5M/resolve/eeefb30/"
        "BIOSCAN_5M_Insect_Dataset_metadata_MultiTypes.zip",
    )


def test_disk_space_is_checked_before_downloading(server, tmp_path, monkeypatch):
    import shutil

    server.add(BERT, b"x" * 1000)
    server.add(CKPT, b"y" * 3000)
    plan = wf.plan_downloads("checkpoints", preset="idt-5m", root=tmp_path, mirror=server.base)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**6, 10**6 - 3999, 3999))
    with pytest.raises(BioclipError, match=r"not enough free disk space under .*: this download needs 4.0 KB, 4.0 KB"):
        wf.download(plan)
    assert [e[0] for e in server.log] == ["HEAD", "HEAD"]  # sizes probed, nothing downloaded
    assert not any(tmp_path.rglob("*.pth*"))


# --------------------------------------------------------------------------------------------- the CLI


def test_dry_run_writes_nothing(tmp_path):
    root = tmp_path / "data"
    proc = run_cli("download", "5m", "--what", "raw", "--root", str(root), "--dry-run", env=QUICK)
    assert proc.returncode == 0, proc.stderr
    assert "https://zenodo.org/records/11973457/files/BIOSCAN_5M_cropped_256_train.zip" in proc.stdout
    assert proc.stdout.count("missing") == 5
    assert not root.exists()


def test_dry_run_shows_partial_and_verified(tmp_path):
    tsv = tmp_path / "bioscan1m/BIOSCAN_Insect_Dataset_metadata.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.with_name(tsv.name + ".part").write_bytes(b"z" * 2500)
    proc = run_cli("download", "1m", "--what", "metadata", "--root", str(tmp_path), "--dry-run", env=QUICK)
    assert "partial: 2.5 KB downloaded" in proc.stdout
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["BIOSCAN_Insect_Dataset_metadata.tsv.part", "bioscan1m"]


def test_unknown_target_lists_the_valid_ones():
    line = assert_one_error_line(run_cli("download", "10m"))
    assert (
        line == "Error: unknown download target '10m'; valid targets: 5m, 1m, insect, checkpoints, embeddings, encoders"
    )
    line = assert_one_error_line(run_cli("download", "1m", "--what", "everything", "--dry-run"))
    assert "valid: hdf5, raw, metadata, partition" in line


def test_checkpoints_happy_path_then_skip(server, tmp_path):
    server.add(BERT, bert_pth(1000))
    server.add(CKPT, clip_pth(5000))
    args = ("download", "checkpoints", "--preset", "idt-5m", "--root", str(tmp_path), "--mirror", server.base)
    proc = run_cli(*args, env=QUICK)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ckpt/BarcodeBERT/5_mer/model_41.pth").read_bytes() == bert_pth(1000)
    assert (tmp_path / "ckpt/bioscan_clip/trained_with_bioscan_5m/image_dna_text.pth").read_bytes() == clip_pth(5000)
    assert "format-checked: a BarcodeBERT checkpoint (no checksum published)" in proc.stdout
    gets = len(server.gets())
    assert gets == 2
    again = run_cli(*args, env=QUICK)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("skipped: present") == 2
    assert len(server.gets()) == gets  # no request for verified files


def test_checksum_mismatch_keeps_bad_bytes_and_fails(server, tmp_path):
    path = "/records/8030065/files/BIOSCAN_Insect_Dataset_metadata.tsv"
    server.add(path, b"processid\tsampleid\nnot the published file\n")
    proc = run_cli("download", "1m", "--what", "metadata", "--root", str(tmp_path), "--mirror", server.base, env=QUICK)
    line = assert_one_error_line(proc)
    dest = tmp_path / "bioscan1m/BIOSCAN_Insect_Dataset_metadata.tsv"
    actual = hashlib.md5(b"processid\tsampleid\nnot the published file\n").hexdigest()
    assert line == f"Error: checksum mismatch for {dest}: expected md5 dec3bb23870a35e2e13bc17a5809c901, got {actual}"
    assert dest.with_name(dest.name + ".bad").is_file() and not dest.exists()
    assert proc.returncode == 1


def test_404_names_the_url_and_suggests_mirror(server, tmp_path):
    proc = run_cli("download", "checkpoints", "--preset", "none-5m", "--root", str(tmp_path), "--mirror", server.base)
    line = assert_one_error_line(proc)
    assert line == f"Error: {server.url(BERT)} was not found (HTTP 404)"
    assert "--mirror BASE_URL" in proc.stderr


def test_no_network_is_one_sentence(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = run_cli(
        "download", "checkpoints", "--preset", "none-1m", "--root", str(tmp_path),
        "--mirror", f"http://127.0.0.1:{port}", env={**QUICK, "BIOCLIP_DOWNLOAD_RETRIES": "1"},
    )  # fmt: skip
    line = assert_one_error_line(proc)
    assert re.fullmatch(
        rf"Error: cannot reach 127\.0\.0\.1:{port} \(.*\): no network connection, or the host is down", line
    )


def test_tiny_preset_needs_nothing():
    proc = run_cli("download", "checkpoints", "--preset", "tiny")
    assert proc.returncode == 0 and "needs nothing" in proc.stderr


# ------------------------------------------------------------------------------- raw data, test registry


def raw_registry(tmp_path: Path, server: FileServer, scheme_host: str) -> tuple[Path, dict[str, bytes]]:
    """A registry of two small 5M zips in the published member layout, served by `server`."""
    csv = b"processid,split,chunk\nAACTA1026-20,train,0\nAACTA161-20,val,\n"
    zips = {
        "meta.zip": zip_bytes({"bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv": csv}),
        "eval.zip": zip_bytes(
            {
                "bioscan5m/images/cropped_256/train/0/AACTA1026-20.jpg": b"\xff\xd8train",
                "bioscan5m/images/cropped_256/val/AACTA161-20.jpg": b"\xff\xd8val",
            }
        ),
    }
    entries = []
    for name, data in zips.items():
        server.add(f"/records/1/files/{name}", data)
        entries.append(
            {
                "name": f"test-{name}",
                "target": "5m",
                "what": ["raw"],
                "kind": "zip-to-unpack",
                "urls": [f"{scheme_host}/records/1/files/{name}"],
                "checksum": f"md5:{hashlib.md5(data).hexdigest()}",
                "dest": f"bioscan5m/archives/{name}",
                "unpack": {"into": ".", "layout": "bioscan5m"},
            }
        )
    entries[0]["check_files"] = {
        "bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv": f"md5:{hashlib.md5(csv).hexdigest()}"
    }
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"artifacts": entries}))
    return path, zips


def test_raw_5m_is_downloaded_unpacked_and_build_hdf5_suggested(server, tmp_path):
    registry, _ = raw_registry(tmp_path, server, "https://zenodo.example")
    root = tmp_path / "data"
    env = {**QUICK, "BIOCLIP_ARTIFACTS": str(registry)}
    args = ("download", "5m", "--what", "raw", "--root", str(root), "--mirror", server.base, "--jobs", "2")
    proc = run_cli(*args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (
        (root / "bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv").read_bytes().startswith(b"processid")
    )
    assert (root / "bioscan5m/images/cropped_256/train/0/AACTA1026-20.jpg").read_bytes() == b"\xff\xd8train"
    assert (root / "bioscan5m/images/cropped_256/val/AACTA161-20.jpg").read_bytes() == b"\xff\xd8val"
    assert not (root / "bioscan5m/archives/eval.zip").exists()  # archives go once unpacked and verified
    marker = json.loads((root / "bioscan5m/archives/eval.zip.unpacked").read_text())
    assert marker["files"] == 2
    assert f"bioclip build-hdf5 5m --root {root} --out {root}/data/BIOSCAN_5M/BIOSCAN_5M.hdf5" in proc.stderr
    gets = len(server.gets())
    again = run_cli(*args, env=env)
    assert again.returncode == 0 and again.stdout.count("skipped: unpacked, md5 verified") == 2
    assert len(server.gets()) == gets


def test_zip_with_parent_member_is_refused_end_to_end(server, tmp_path):
    registry, zips = raw_registry(tmp_path, server, "https://zenodo.example")
    evil = zip_bytes({"bioscan5m/images/cropped_256/val/ok.jpg": b"ok", "../../evil.txt": b"evil"})
    server.add("/records/1/files/eval.zip", evil)
    text = registry.read_text().replace(hashlib.md5(zips["eval.zip"]).hexdigest(), hashlib.md5(evil).hexdigest())
    registry.write_text(text)
    root = tmp_path / "data"
    env = {**QUICK, "BIOCLIP_ARTIFACTS": str(registry)}
    proc = run_cli("download", "5m", "--what", "raw", "--root", str(root), "--mirror", server.base, env=env)
    line = assert_one_error_line(proc)
    assert "member '../../evil.txt' contains '..'" in line
    assert not (root / "bioscan5m/images/cropped_256/val/ok.jpg").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_http_source_is_refused_without_mirror(server, tmp_path):
    registry, _ = raw_registry(tmp_path, server, server.base)  # plain-http URLs in the registry
    env = {**QUICK, "BIOCLIP_ARTIFACTS": str(registry)}
    proc = run_cli("download", "5m", "--what", "raw", "--root", str(tmp_path / "data"), env=env)
    line = assert_one_error_line(proc)
    assert line.startswith(f"Error: refusing to download {server.base}/records/1/files/meta.zip: only HTTPS")
    assert server.log == [] and not (tmp_path / "data").exists()


# ------------------------------------------------------------------------------------ hub files (sha256)


def test_hub_file_sha256_comes_from_the_hub_metadata(server, tmp_path):
    path = "/bioscan-ml/clibd/resolve/main/ckpt/bioscan_clip/ver_1_0/bioscan_5m/image_dna_text_4gpu/best.pth"
    data = os.urandom(30_000)
    sha = hashlib.sha256(data).hexdigest()
    server.add(path, data, headers={"X-Linked-Etag": f'"{sha}"', "X-Repo-Commit": "0" * 40})
    server.add(BERT, bert_pth())
    env = {**QUICK, "HF_HUB_OFFLINE": "0"}
    args = ("download", "checkpoints", "--preset", "idt-5m-clibd", "--root", str(tmp_path), "--mirror", server.base)
    proc = run_cli(*args, env=env)
    assert proc.returncode == 0, proc.stderr
    dest = tmp_path / "ckpt/bioscan_clip/ver_1_0/bioscan_5m/image_dna_text_4gpu/best.pth"
    assert dest.read_bytes() == data
    assert "sha256 verified" in proc.stdout
    again = run_cli(*args, env=env)
    assert "skipped: present, sha256 verified against the hub" in again.stdout

    dest.unlink()
    server.add(path, data, headers={"X-Linked-Etag": f'"{"a" * 64}"', "X-Repo-Commit": "0" * 40})
    line = assert_one_error_line(run_cli(*args, env=env))
    assert line == f"Error: checksum mismatch for {dest}: expected sha256 {'a' * 64}, got {sha}"


def serve_hub_model(server: FileServer, repo: str, files: dict[str, bytes], sha: str = "1" * 40) -> None:
    """The few Hugging Face hub routes that `list_repo_files` + `snapshot_download` read."""
    info = {"id": repo, "sha": sha, "siblings": [{"rfilename": f} for f in files]}
    tree = [{"type": "file", "path": f, "size": len(d), "oid": "0" * 40} for f, d in files.items()]
    server.add(f"/api/models/{repo}/revision/main", json.dumps(info).encode())
    for rev in ("main", sha):
        server.add(f"/api/models/{repo}/tree/{rev}", json.dumps(tree).encode())
        for name, data in files.items():
            etag = f'"{hashlib.sha256(data).hexdigest()}"'
            server.add(f"/{repo}/resolve/{rev}/{name}", data, headers={"X-Repo-Commit": sha, "ETag": etag})


def test_encoders_go_into_the_hf_cache_then_count_as_cached(server, tmp_path):
    repo = "google/vit-base-patch16-224"
    files = {"config.json": b'{"model_type": "vit"}', "model.safetensors": b"W" * 64, "pytorch_model.bin": b"B" * 64}
    serve_hub_model(server, repo, files)
    env = {**QUICK, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}
    args = ("download", "encoders", "--preset", "id-5m", "--mirror", server.base)
    proc = run_cli(*args, env=env)
    assert proc.returncode == 0, proc.stderr
    snapshot = tmp_path / "hf/hub/models--google--vit-base-patch16-224/snapshots" / ("1" * 40)
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "model.safetensors"]  # one weights copy
    assert (snapshot / "model.safetensors").read_bytes() == b"W" * 64
    assert "2 file(s) sha256 verified" in proc.stdout  # blobs named by their sha256 etag were hashed
    gets = len(server.gets())
    dry = run_cli(*args, "--dry-run", env={**env, "HF_HUB_OFFLINE": "1"})
    assert "cached" in dry.stdout and str(tmp_path / "hf/hub/models--google--vit-base-patch16-224") in dry.stdout
    again = run_cli(*args, env=env)
    assert again.returncode == 0 and "skipped: cached" in again.stdout
    assert len(server.gets()) == gets


def test_weight_files_pick_one_copy():
    assert wf._weight_files(["config.json", "model.safetensors", "pytorch_model.bin"]) == [
        "*.safetensors",
        "*.safetensors.index.json",
    ]
    assert wf._weight_files(["config.json", "pytorch_model.bin", "vocab.txt"]) == ["pytorch_model.bin"]


def test_ctrl_c_keeps_the_partial_file_and_the_next_run_resumes(server, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    data = bert_pth(100_000)  # ~400 KB
    server.add(BERT, data, rate=200_000)  # ~2 s for the whole file
    dest = tmp_path / "ckpt/BarcodeBERT/5_mer/model_41.pth"
    part = dest.with_name(dest.name + ".part")
    exe = str(Path(sys.executable).with_name("bioclip"))
    args = ["download", "checkpoints", "--preset", "none-5m", "--root", str(tmp_path), "--mirror", server.base]
    proc = subprocess.Popen([exe, *args], env={**os.environ, **QUICK}, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while time.time() < deadline and not (part.is_file() and part.stat().st_size > 50_000):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "partial files are kept" in stderr
    kept = part.stat().st_size
    assert 50_000 <= kept < len(data) and not dest.exists()
    assert part.read_bytes() == data[:kept]
    server.add(BERT, data)  # full speed now
    again = run_cli(*args, env=QUICK)
    assert again.returncode == 0, again.stderr
    assert dest.read_bytes() == data
    assert server.gets(BERT)[-1][2] == f"bytes={kept}-"


def test_artifact_without_a_published_url_is_said_so(tmp_path):
    registry = tmp_path / "registry.yaml"
    entry = {"name": "unpublished", "target": "1m", "what": ["partition"], "kind": "file", "urls": None,
             "dest": "bioscan1m/partition.txt", "note": "no URL is published for it"}  # fmt: skip
    registry.write_text(yaml.safe_dump({"artifacts": [entry]}))
    env = {**QUICK, "BIOCLIP_ARTIFACTS": str(registry)}
    dry = run_cli("download", "1m", "--what", "partition", "--root", str(tmp_path), "--dry-run", env=env)
    assert dry.returncode == 0 and dry.stdout.count("no published URL") == 2  # source and status columns
    assert "note: unpublished: no URL is published for it" in dry.stderr
    line = assert_one_error_line(run_cli("download", "1m", "--what", "partition", "--root", str(tmp_path), env=env))
    assert line == "Error: unpublished has no published download URL"
    assert not (tmp_path / "bioscan1m").exists()


def test_hf_offline_mode_is_one_clear_sentence(tmp_path):
    proc = run_cli("download", "encoders", "--preset", "id-5m", env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)})
    assert assert_one_error_line(proc) == "Error: HF_HUB_OFFLINE is set, so the Hugging Face hub cannot be reached"


def test_encoder_blob_that_does_not_hash_to_its_etag_is_reported(server, tmp_path):
    repo = "google/vit-base-patch16-224"
    serve_hub_model(server, repo, {"config.json": b"{}", "model.safetensors": b"W" * 64})
    path = f"/{repo}/resolve/{'1' * 40}/model.safetensors"
    server.add(path, b"W" * 64, headers={"X-Repo-Commit": "1" * 40, "ETag": f'"{"b" * 64}"'})
    env = {**QUICK, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}
    proc = run_cli("download", "encoders", "--preset", "id-5m", "--mirror", server.base, env=env)
    line = assert_one_error_line(proc)
    actual = hashlib.sha256(b"W" * 64).hexdigest()
    assert line.endswith(f"model.safetensors: expected sha256 {'b' * 64}, got {actual}")
