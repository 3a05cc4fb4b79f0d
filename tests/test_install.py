"""A non-editable install (the wheel) finds the presets that ship as package data."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest
from conftest import REPO


@pytest.mark.slow
def test_wheel_ships_presets_and_the_installed_package_finds_them(tmp_path):
    wheel_dir = tmp_path / "wheel"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = wheel_dir.glob("bioscan_clip-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "bioclip_cli/presets/idt-5m.yaml" in names and "bioclip_cli/presets/_v1.yaml" in names
    assert not any(n.startswith("presets/") for n in names), "presets must live inside the package"
    assert "bioclip_cli/data/insect_taxonomy.json" in names and "bioclip_cli/data/insect_taxonomy.LICENSE" in names
    assert "bioclip_cli/py.typed" in names  # PEP 561: type checkers read the package's annotations

    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    env = dict(os.environ, PYTHONPATH=str(target), COLUMNS="200", NO_COLOR="1")
    code = (
        "import bioclip_cli, bioclip_cli.config as c\n"
        "print(bioclip_cli.__file__)\n"
        "print(c.presets_dir())\n"
        "print(c.load_config('idt-5m').train.epochs)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    module_file, presets, epochs = res.stdout.split()
    assert module_file.startswith(str(target)) and presets.startswith(str(target)) and epochs == "4"
    script = subprocess.run(
        [sys.executable, "-m", "bioclip_cli", "presets"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert script.returncode == 0 and "idt-5m" in script.stdout and "none-1m" in script.stdout
