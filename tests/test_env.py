"""`bioclip env`: the bug-report facts, offline, as a table and as JSON."""

from __future__ import annotations

import json
import os

import faiss
import h5py
import numpy
import torch
from conftest import run_cli

from bioclip_cli import __version__
from bioclip_cli.workflows.environment import environment_report, environment_rows


def test_env_json_holds_the_installed_versions(tmp_path):
    (tmp_path / "runs").mkdir()
    res = run_cli("env", "--format", "json", cwd=tmp_path, env={"OMP_NUM_THREADS": "1", "BIOCLIP_QUIET": "1"})
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["bioscan-clip"]["version"] == __version__
    assert report["torch"]["version"] == torch.__version__
    assert report["torch"]["cuda_build"] == torch.version.cuda
    assert report["torch"]["cuda_available"] is torch.cuda.is_available()
    assert report["faiss"]["version"] == faiss.__version__
    assert report["faiss"]["gpu_support"] is hasattr(faiss, "StandardGpuResources")
    assert report["packages"]["h5py"] == h5py.__version__ and report["packages"]["numpy"] == numpy.__version__
    assert report["threads"]["cpu_count"] == os.cpu_count() and report["threads"]["OMP_NUM_THREADS"] == "1"
    assert report["threads"]["torch_threads"] == 1  # torch honours OMP_NUM_THREADS
    assert report["huggingface"]["hub_offline"] is True  # the tests run with HF_HUB_OFFLINE=1
    assert report["huggingface"]["home"] == os.environ["HF_HOME"]
    assert report["folders"]["runs"] == f"{tmp_path / 'runs'} (exists)"
    assert report["folders"]["data"] == f"{tmp_path / 'data'} (absent)"
    assert report["settings"] == {"BIOCLIP_QUIET": "1"}
    assert "cpu" in report["devices"]


def test_env_rows_have_one_row_per_fact():
    report = environment_report()
    rows = environment_rows(report)
    assert {"section": "torch", "item": "version", "value": torch.__version__} in rows
    assert len(rows) == sum(max(1, len(items)) for items in report.values())
    assert {"section": "faiss", "item": "gpu_support", "value": hasattr(faiss, "StandardGpuResources")} in rows
