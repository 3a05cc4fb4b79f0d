"""Test isolation: no network, no colour, wide deterministic rich output, caches in a temp folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setenv("BIOCLIP_QUIET", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache / "hf"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    yield


def bioclip_exe() -> str:
    """The installed `bioclip` console script (the one beside this Python)."""
    exe = Path(sys.executable).with_name("bioclip")
    if exe.exists():
        return str(exe)
    found = shutil.which("bioclip")
    if not found:
        pytest.fail("the `bioclip` console script is not installed; run `pip install -e .[test]`")
    return found


def run_cli(*args: str, cwd: str | Path | None = None, env: dict | None = None, timeout: float = 600):
    """Run the installed `bioclip` script in a subprocess; returns CompletedProcess (text)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [bioclip_exe(), *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout
    )


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip("../shared/realdata is not beside this checkout")
    return REALDATA


@pytest.fixture(scope="session")
def sample_h5(tmp_path_factory) -> Path:
    """The bundled sample built once per session into the published HDF5 layout (with language tokens
    from the `bioclip-sample` vocabulary). Shared by many tests: read it, never modify it."""
    from bioclip_cli.data.sample import SAMPLE_TOKENIZER, sample_root
    from bioclip_cli.progress import is_quiet, set_quiet
    from bioclip_cli.workflows.build_hdf5 import build_5m

    out = tmp_path_factory.mktemp("sample") / "BIOSCAN_5M_sample.hdf5"
    quiet = is_quiet()
    set_quiet(True)
    try:
        build_5m(sample_root(), out, text_tokenizer=SAMPLE_TOKENIZER, workers=2)
    finally:
        set_quiet(quiet)
    return out


DEMO_TEST_EPOCHS = 12  # the demo preset's first 12 epochs: a clear gain over the untrained model, in about a minute


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> dict:
    """`bioclip demo` run once per session as the installed command (fixed seed, DEMO_TEST_EPOCHS epochs).

    Returns {"out": run directory, "json": the --json summary path, "result": CompletedProcess}. Shared by
    the demo and predict tests: read it, never modify it (copy it first).
    """
    root = tmp_path_factory.mktemp("demo")
    out, summary = root / "runs" / "demo", root / "demo-summary.json"
    env = {"BIOCLIP_QUIET": "1", "NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(root / "hf"), "WANDB_MODE": "disabled"}  # fmt: skip
    result = run_cli(
        "demo", "--out", str(out), "--epochs", str(DEMO_TEST_EPOCHS), "--json", str(summary), cwd=root, env=env
    )
    return {"out": out, "json": summary, "result": result}


@pytest.fixture
def lora_merges(monkeypatch) -> list:
    """The models whose `lora_merged()` context was entered, in order (the real context still runs)."""
    from bioclip_cli.models.clip import BioClipModel

    calls: list = []
    real = BioClipModel.lora_merged

    def counted(self):
        calls.append(self)
        return real(self)

    monkeypatch.setattr(BioClipModel, "lora_merged", counted)
    return calls
