"""The installed console scripts: help, version, presets, error translation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import bioclip_exe, run_cli

COMMANDS = ["download", "build-hdf5", "train", "embed", "eval", "presets", "inspect", "demo", "predict", "env", "zsl"]


def test_root_help_lists_every_command():
    res = run_cli("--help")
    assert res.returncode == 0, res.stderr
    for cmd in COMMANDS:
        assert cmd in res.stdout


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help_and_examples(cmd):
    res = run_cli(cmd, "--help")
    assert res.returncode == 0, res.stderr
    assert "Usage: bioclip " + cmd in res.stdout
    assert "Examples" in res.stdout and "$ bioclip" in res.stdout or "$ accelerate" in res.stdout


def test_version_from_both_scripts_and_module():
    from bioclip_cli import __version__

    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"bioscan-clip {__version__}"
    alias_exe = Path(bioclip_exe()).with_name("bioscan-clip")
    alias = subprocess.run([str(alias_exe), "--version"], capture_output=True, text=True)
    assert alias.stdout.strip() == f"bioscan-clip {__version__}"
    mod = subprocess.run([sys.executable, "-m", "bioclip_cli", "--version"], capture_output=True, text=True)
    assert mod.stdout.strip() == f"bioscan-clip {__version__}"


def test_presets_lists_paper_and_small_presets():
    res = run_cli("presets")
    assert res.returncode == 0, res.stderr
    for name in ["none-1m", "id-1m", "idt-1m", "none-5m", "id-5m", "idt-5m", "tiny", "demo", "idt-5m-clibd"]:
        assert name in res.stdout
    assert "_v1" not in res.stdout


def test_presets_name_prints_the_resolved_yaml():
    res = run_cli("presets", "idt-5m")
    assert res.returncode == 0, res.stderr
    data = yaml.safe_load(res.stdout)
    assert data["name"] == "idt-5m"
    assert data["train"]["batch_size"] == 400 and data["train"]["epochs"] == 4 and data["train"]["lr"] == 0.001
    assert data["model"]["image"]["lora"] == {
        "r": 4,
        "alpha": 4.0,
        "dropout": 0.0,
        "target_modules": ["query", "value"],
    }
    assert data["data"]["hdf5"] == "data/BIOSCAN_5M/BIOSCAN_5M.hdf5"
    assert data["model"]["logit_scale"] == pytest.approx(1 / 0.07)


def test_presets_with_override_and_json(tmp_path):
    out = tmp_path / "cfg.json"
    res = run_cli("presets", "idt-5m", "--set", "train.batch_size=64", "--json", str(out))
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load(res.stdout)["train"]["batch_size"] == 64
    import json

    assert json.loads(out.read_text())["train"]["batch_size"] == 64


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["presets", "idt-5m", "--set", "train.optimizer=sgd"],
            "train.optimizer: 'sgd' is not valid; choose one of adam, adamw",
        ),
        (["presets", "nope"], "unknown preset 'nope'"),
        (["presets", "idt-5m", "--set", "train.wat=1"], "unknown configuration key 'train.wat'"),
    ],
)
def test_errors_are_one_line_plus_hint_without_traceback(args, needle):
    res = run_cli(*args)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("Error: ") and needle in lines[0]
    assert len(lines) <= 2


def test_debug_shows_the_traceback():
    res = run_cli("--debug", "presets", "nope")
    assert res.returncode != 0 and "Traceback" in res.stderr and "ConfigError" in res.stderr


def test_not_available_yet_exits_2_and_never_pretends():
    code = (
        "from bioclip_cli.cli.app import app, main\n"
        "from bioclip_cli.errors import NotAvailableYet\n"
        "@app.command('later')\n"
        "def later():\n"
        "    raise NotAvailableYet('bioclip later (a future workflow)')\n"
        "main(['later'])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 2
    assert "Error: not available yet: bioclip later (a future workflow)" in res.stderr
    assert "Traceback" not in res.stderr


def test_usage_errors_exit_2():
    res = run_cli("eval", "--k")
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from bioclip_cli.cli.app import main\n"
        "try:\n    main(['presets'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'faiss', 'h5py', 'peft', 'accelerate', 'cv2') if m in sys.modules]\n"
        "print('HEAVY:' + ','.join(heavy))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""}
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "HEAVY:"
