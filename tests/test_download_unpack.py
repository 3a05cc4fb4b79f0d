"""Safe unpacking of small zips and tars (built here) into the raw layout that build-hdf5 reads."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from bioclip_cli.data.unpack import archive_size, layout_path, unpack
from bioclip_cli.errors import DataError

CSV = "processid,sampleid,split,chunk\nAACTA1026-20,S1,train,0\n"
JPEG = b"\xff\xd8\xff\xe0fake-jpeg\xff\xd9"


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("member", "layout", "expected"),
    [
        # the published archives (bioscan-dataset layout, top folder bioscan5m/)
        ("bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv", "bioscan5m",
         "bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv"),
        ("bioscan5m/images/cropped_256/pretrain/00/AACTA1040-20.jpg", "bioscan5m",
         "bioscan5m/images/cropped_256/pretrain/00/AACTA1040-20.jpg"),
        # other packings land in the same place
        ("BIOSCAN_5M/metadata/csv/x.csv", "bioscan5m", "bioscan5m/metadata/csv/x.csv"),
        ("BIOSCAN_5M_Insect_Dataset_metadata.csv", "bioscan5m",
         "bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv"),
        ("cropped_256/val/YGEN925-22.jpg", "bioscan5m", "bioscan5m/images/cropped_256/val/YGEN925-22.jpg"),
        ("train/f/YGEN986-22.jpg", "bioscan5m", "bioscan5m/images/cropped_256/train/f/YGEN986-22.jpg"),
        ("eval_zip/key_unseen/A.jpg", "bioscan5m", "bioscan5m/images/cropped_256/key_unseen/A.jpg"),
        ("./bioscan5m//images/cropped_256/test/A.jpg", "bioscan5m", "bioscan5m/images/cropped_256/test/A.jpg"),
        ("win\\images\\cropped_256\\val\\A.jpg", "bioscan5m", "bioscan5m/images/cropped_256/val/A.jpg"),
        # BIOSCAN-1M: zip members under bioscan/, partition files under CLIBD_partitioning/
        ("bioscan/images/cropped_256/part18/5351601.jpg", "bioscan1m", "bioscan1m/images/cropped_256/part18/5351601.jpg"),
        ("CLIBD_partitioning/all_keys.txt", "bioscan1m", "bioscan1m/CLIBD_partitioning/all_keys.txt"),
        ("val_seen.txt", "bioscan1m", "bioscan1m/CLIBD_partitioning/val_seen.txt"),
        ("BIOSCAN_Insect_Dataset_metadata.tsv", "bioscan1m", "bioscan1m/BIOSCAN_Insect_Dataset_metadata.tsv"),
        ("a/b.bin", None, "a/b.bin"),
    ],
)  # fmt: skip
def test_layout_mapping(member, layout, expected):
    assert str(layout_path(member, layout)) == expected


def test_raw_5m_zips_unpack_into_the_build_hdf5_layout(tmp_path):
    meta = make_zip(
        tmp_path / "meta.zip",
        {
            "bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv": CSV.encode(),
            "bioscan5m/metadata/jsonld/BIOSCAN_5M_Insect_Dataset_metadata.jsonld": b"{}",
        },
    )
    images = make_zip(
        tmp_path / "eval.zip",
        {
            "bioscan5m/images/cropped_256/train/0/AACTA1026-20.jpg": JPEG,
            "bioscan5m/images/cropped_256/val/AACTA161-20.jpg": JPEG + b"1",
            "bioscan5m/images/cropped_256/pretrain/00/AACTA1040-20.jpg": JPEG + b"22",
        },
    )
    root = tmp_path / "root"
    seen = []
    first = unpack(meta, root, "bioscan5m", on_bytes=seen.append)
    second = unpack(images, root, "bioscan5m")
    assert (root / "bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv").read_text() == CSV
    assert (root / "bioscan5m/images/cropped_256/train/0/AACTA1026-20.jpg").read_bytes() == JPEG
    assert (root / "bioscan5m/images/cropped_256/val/AACTA161-20.jpg").read_bytes() == JPEG + b"1"
    assert (root / "bioscan5m/images/cropped_256/pretrain/00/AACTA1040-20.jpg").read_bytes() == JPEG + b"22"
    assert (first.files, second.files, first.skipped) == (2, 3, 0)
    assert sum(seen) == archive_size(meta) == len(CSV) + 2
    again = unpack(images, root, "bioscan5m")  # an interrupted unpack continues: same-size files are kept
    assert (again.files, again.skipped) == (0, 3)


def test_flat_zip_without_top_folder(tmp_path):
    archive = make_zip(tmp_path / "flat.zip", {"cropped_256/test_unseen/BCMIN4148-23.jpg": JPEG})
    unpack(archive, tmp_path / "root", "bioscan5m")
    assert (tmp_path / "root/bioscan5m/images/cropped_256/test_unseen/BCMIN4148-23.jpg").read_bytes() == JPEG


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../evil.txt", "contains '..'"),
        ("bioscan5m/../../evil.txt", "contains '..'"),
        ("/etc/evil.txt", "is an absolute path"),
        ("C:/evil.txt", "is an absolute path"),
        ("..\\evil.txt", "contains '..'"),
    ],
)
def test_unsafe_member_refuses_the_whole_archive(tmp_path, name, why):
    archive = make_zip(tmp_path / "bad.zip", {"bioscan5m/metadata/csv/ok.csv": b"fine", name: b"evil"})
    root = tmp_path / "root"
    with pytest.raises(DataError) as info:
        unpack(archive, root, "bioscan5m")
    assert f"member {name!r} {why}" in info.value.message
    assert not root.exists()  # nothing was written, not even the safe member
    assert not (tmp_path / "evil.txt").exists()


def test_zip_symlink_member_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("bioscan5m/images/cropped_256/val/link.jpg")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match=r"is a link"):
        unpack(archive, tmp_path / "root", "bioscan5m")
    assert not (tmp_path / "root").exists()


def test_tar_is_unpacked_and_its_links_refused(tmp_path):
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tf:
        info = tarfile.TarInfo("bioscan/images/cropped_256/part1/x.jpg")
        info.size = len(JPEG)
        tf.addfile(info, io.BytesIO(JPEG))
    result = unpack(good, tmp_path / "root", "bioscan1m")
    assert result.files == 1
    assert (tmp_path / "root/bioscan1m/images/cropped_256/part1/x.jpg").read_bytes() == JPEG

    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tf:
        link = tarfile.TarInfo("bioscan/images/evil")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc"
        tf.addfile(link)
    with pytest.raises(DataError, match=r"'bioscan/images/evil' is a link"):
        unpack(bad, tmp_path / "root2", "bioscan1m")
    assert not (tmp_path / "root2").exists()


def test_not_an_archive(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match=r"neither a zip nor a tar"):
        unpack(junk, tmp_path / "root")
