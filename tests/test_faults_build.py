"""Issue 16, faults 5, 11 (disk full in build-hdf5) and 12 (empty inputs): building datasets safely."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
import textwrap

import pytest
from conftest import run_cli
from test_data_build import sample_rows, write_raw

from bioclip_cli.errors import BioclipError
from bioclip_cli.workflows.build_hdf5 import build_5m


def val_raw(root, n=6):
    return write_raw(root, [dict(r) for r in sample_rows() if r["split"] == "val"][:n])


def test_a_second_build_of_the_same_output_is_refused_naming_the_first(tmp_path):
    root = val_raw(tmp_path / "raw")
    out = tmp_path / "out.hdf5"
    code = textwrap.dedent(f"""
        import sys
        from bioclip_cli.run_lock import exclusive_lock
        with exclusive_lock({str(tmp_path / ".out.hdf5.lock")!r}, "x", "bioclip build-hdf5"):
            print("held", flush=True)
            sys.stdin.read()
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    partial_of_the_first = tmp_path / f".out.hdf5.{holder.pid}.0123abcd.partial"
    partial_of_the_first.write_bytes(b"being written")
    try:
        with pytest.raises(BioclipError) as err:
            build_5m(root, out, workers=1)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    host = socket.gethostname()
    assert str(err.value) == f"output {out} is in use by process {holder.pid} (host {host}) (bioclip build-hdf5)"
    assert partial_of_the_first.read_bytes() == b"being written"  # the second build touched nothing
    assert not out.exists()
    report = build_5m(root, out, workers=1)  # free again: builds, and clears the crashed build's partial
    assert report.groups["val_seen"] == 6 and out.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.hdf5", "out.hdf5.report.json", "raw"]


def test_disk_full_while_building_is_one_sentence_and_leaves_no_partial(tmp_path, monkeypatch):
    from bioclip_cli.workflows import build_hdf5

    root = val_raw(tmp_path / "raw")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(build_hdf5, "_write_groups", full)
    out = tmp_path / "out.hdf5"
    with pytest.raises(BioclipError) as err:
        build_5m(root, out, workers=1)
    assert str(err.value) == f"No space left on device writing {out}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_a_header_only_csv_warns_and_inspect_warns_about_empty_groups(tmp_path):
    root = val_raw(tmp_path / "raw")
    meta = next((root / "bioscan5m").rglob("*.csv"))
    meta.write_text(meta.read_text().splitlines()[0] + "\n")
    out = tmp_path / "empty.hdf5"
    result = run_cli("build-hdf5", "5m", "--root", str(root), "--out", str(out), "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert f"no rows were written: every group of {out} is empty (0 metadata row(s) read)" in result.stderr
    inspected = run_cli("inspect", str(out))
    assert inspected.returncode == 0, inspected.stderr
    assert "group val_seen is empty (0 rows)" in inspected.stderr


def test_an_empty_training_group_is_not_told_to_use_batch_size_at_most_0():
    from bioclip_cli.data.sampler import EpochSampler
    from bioclip_cli.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        EpochSampler(0, 8, seed=0)
    assert str(err.value) == "the training group has only 0 row(s); contrastive training needs at least 2 (2 per batch)"
    assert "at most 0" not in err.value.hint and "bioclip inspect" in err.value.hint
    with pytest.raises(ConfigError) as err:  # a batch that is merely too large keeps its hint
        EpochSampler(5, 8, seed=0)
    assert err.value.hint == "use a batch size of at most 5 (e.g. --batch-size 5)"
