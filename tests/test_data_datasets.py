"""Train/eval datasets over the built sample: items, modalities, determinism, DataLoader workers, collate."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bioclip_cli.config import load_config
from bioclip_cli.data.datasets import EvalDataset, TrainDataset, batch_to_device, collate, item_seed
from bioclip_cli.data.dna import kmer_tokenize
from bioclip_cli.data.hdf5 import BioscanH5
from bioclip_cli.data.hdf5_writer import write_groups
from bioclip_cli.data.images import EvalTransform, TrainTransform, pixels_to_float
from bioclip_cli.data.sample import sample_root
from bioclip_cli.errors import DataError
from bioclip_cli.workflows.build_hdf5 import build_5m

TRAIN = "no_split_and_seen_train"


def train_set(path, group, cfg, modalities=None, seed=None):
    """A TrainDataset given the values it reads from a run configuration."""
    return TrainDataset(
        path, group, cfg.data, modalities=cfg.model.modalities if modalities is None else modalities,
        tokenizer=cfg.model.text.tokenizer, seed=cfg.train.seed if seed is None else seed,
    )  # fmt: skip


def eval_set(path, group, cfg, modalities=None):
    """An EvalDataset given the values it reads from a run configuration."""
    modalities = cfg.model.modalities if modalities is None else modalities
    return EvalDataset(path, group, cfg.data, modalities=modalities, tokenizer=cfg.model.text.tokenizer)


def expected_image(reader, cfg, row, epoch=0):
    """Row `row`'s training image as the float32 model input, made by the transform alone."""
    return TrainTransform(cfg.data.image)(reader.image_bytes(row), item_seed(cfg.train.seed, epoch, row))


@pytest.fixture(scope="module")
def tiny():
    return load_config("tiny", [], [])


def with_text(cfg, **changes):
    return dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, text=dataclasses.replace(cfg.data.text, **changes))
    )


def test_train_item_and_collate(sample_h5, tiny):
    ds = train_set(sample_h5, TRAIN, tiny)
    reader = BioscanH5(sample_h5).group(TRAIN)
    assert len(ds) == len(reader) == 224
    item = ds[5]
    assert set(item) == {"index", "image", "dna", "dna_mask", "text", "text_mask", "text_type"}
    assert item["index"] == 5
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.uint8  # floats on the device
    expected = TrainTransform(tiny.data.image)(reader.image_bytes(5), item_seed(tiny.train.seed, 0, 5))
    assert torch.equal(pixels_to_float(item["image"], tiny.data.image), expected)
    assert torch.equal(item["image"].float() / 255, expected)
    ids, mask = kmer_tokenize([reader.string("barcode", 5)])
    assert np.array_equal(item["dna"], ids[0]) and np.array_equal(item["dna_mask"], mask[0])
    assert np.array_equal(item["text"], reader.language_token_row(5)["input_ids"])
    batch = collate([ds[i] for i in (3, 1, 4)])
    assert set(batch) == set(item)
    assert batch["index"].tolist() == [3, 1, 4] and batch["index"].dtype == torch.long
    assert batch["image"].shape == (3, 3, 32, 32) and batch["image"].dtype == torch.uint8
    on_device = batch_to_device(batch, "cpu", tiny.data.image)
    assert on_device["image"].dtype == torch.float32 and on_device["image"].is_contiguous()
    assert torch.equal(on_device["image"], torch.stack([expected_image(reader, tiny, i) for i in (3, 1, 4)]))
    assert all(torch.equal(on_device[k], batch[k]) for k in batch if k != "image")
    assert batch["dna"].shape == batch["dna_mask"].shape == (3, 133) and batch["dna"].dtype == torch.long
    assert all(batch[k].shape == (3, 20) and batch[k].dtype == torch.long for k in ("text", "text_mask", "text_type"))


def test_only_the_configured_modalities_are_read(tmp_path, tiny):
    # images that cannot be decoded: fine as long as the image modality is not asked for
    path = write_groups(
        tmp_path / "junk.hdf5",
        {
            "val_seen": {
                "image": [b"junk", b"junk"],
                "barcode": ["AAAAA", "TTTTT"],
                "processid": ["A-1", "B-2"],
                **{
                    level: ["Diptera", "Culicidae", "Culex", "Culex pipiens"][i : i + 1] * 2
                    for i, level in enumerate(("order", "family", "genus", "species"))
                },
            }
        },
    )
    ds = eval_set(path, "val_seen", tiny, modalities=["dna", "text"])
    item = ds[1]
    assert set(item) == {"index", "dna", "dna_mask", "text", "text_mask", "text_type"}
    assert item["dna"][1] == 1026
    assert set(collate([ds[0]])) == {"index", "dna", "dna_mask", "text", "text_mask", "text_type"}
    with pytest.raises(DataError, match=r"row 0 \(A-1\) has an unreadable image"):
        eval_set(path, "val_seen", tiny, modalities=["image"])[0]
    write_groups(tmp_path / "nodna.hdf5", {"g": {"image": [b"x"], "processid": ["A"]}})
    with pytest.raises(DataError, match="barcode"):
        train_set(tmp_path / "nodna.hdf5", "g", tiny, modalities=["dna"])
    with pytest.raises(DataError, match="no group 'nope'"):
        train_set(path, "nope", tiny)


def test_train_augmentation_is_seeded_per_item_and_epoch(sample_h5, tiny):
    ds = train_set(sample_h5, TRAIN, tiny, modalities=["image"])
    a, b = ds[7]["image"], ds[7]["image"]
    assert torch.equal(a, b)
    ds.set_epoch(1)
    assert not torch.equal(ds[7]["image"], a)
    ds.set_epoch(0)
    assert torch.equal(ds[7]["image"], a)
    other = train_set(sample_h5, TRAIN, tiny, modalities=["image"], seed=tiny.train.seed + 1)
    assert not torch.equal(other[7]["image"], a)
    assert len({item_seed(42, e, i) for e in range(3) for i in range(1000)}) == 3000


def test_dataloader_with_two_workers_matches_in_process(sample_h5, tiny):
    ds = train_set(sample_h5, TRAIN, tiny)
    ds.set_epoch(3)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=2, collate_fn=collate, shuffle=False)
    batches = list(loader)
    assert sum(len(b["index"]) for b in batches) == len(ds)
    expected = collate([ds[i] for i in range(16, 32)])
    for key, value in expected.items():
        assert torch.equal(batches[1][key], value), key
    assert torch.equal(torch.cat([b["index"] for b in batches]), torch.arange(len(ds)))


def test_text_stored_or_retokenised_agree(sample_h5, tiny, tmp_path):
    stored = eval_set(sample_h5, "val_seen", tiny, modalities=["text"])
    assert stored.stored_text
    fresh = eval_set(sample_h5, "val_seen", with_text(tiny, use_stored_tokens=False), modalities=["text"])
    assert not fresh.stored_text
    for i in (0, 11, 38):
        for key in ("text", "text_mask", "text_type"):
            assert np.array_equal(stored[i][key], fresh[i][key])
    no_tokens = tmp_path / "no_tokens.hdf5"
    build_5m(sample_root(), no_tokens, splits=["val"], workers=1)
    plain = eval_set(no_tokens, "val_seen", tiny, modalities=["text"])
    assert not plain.stored_text and np.array_equal(plain[3]["text"], stored[3]["text"])


def test_eval_dataset_labels_ids_and_transform(sample_h5, tiny):
    ds = eval_set(sample_h5, "val_unseen", tiny)
    reader = BioscanH5(sample_h5).group("val_unseen")
    assert len(ds) == 36
    assert ds.sample_ids.tolist() == reader.sample_ids().tolist()
    assert ds.labels["species"].tolist() == reader.strings("species").tolist()
    assert ds.label_dicts()[2] == {level: reader.row(2)[level] for level in ("order", "family", "genus", "species")}
    expected = EvalTransform(tiny.data.image)(reader.image_bytes(2))
    assert torch.equal(ds[2]["image"], expected) and torch.equal(ds[2]["image"], ds[2]["image"])
    assert ds[2]["index"] == 2


def test_getitems_is_a_batch_of_items_that_collate_passes_on_without_a_copy(sample_h5, tiny):
    ds = train_set(sample_h5, TRAIN, tiny)
    ds.set_epoch(2)
    rows = [9, 0, 9, 200]
    items = ds.__getitems__(rows)
    assert [it["index"] for it in items] == rows
    for got, i in zip(items, rows):
        single = ds[i]
        assert set(got) == set(single)
        for key in single:
            assert np.array_equal(np.asarray(got[key]), np.asarray(single[key])), key
    batch = collate(items)
    assert batch["image"].data_ptr() == items[0]["image"].data_ptr()  # the items' own batch, not a copy
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.uint8
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)  # [B, H, W, 3] memory, no copy
    assert torch.equal(batch["image"], torch.stack([ds[i]["image"] for i in rows]))
    reordered = collate(items[::-1])  # not in slot order: stacked
    assert reordered["image"].data_ptr() != batch["image"].data_ptr()
    assert torch.equal(reordered["image"], batch["image"].flip(0))
    assert torch.equal(collate(items[1:3])["image"], batch["image"][1:3])


def test_normalised_training_images(sample_h5, tiny):
    image = dataclasses.replace(tiny.data.image, mean=[0.5, 0.4, 0.3], std=[0.25, 0.2, 0.3])
    norm_cfg = dataclasses.replace(tiny, data=dataclasses.replace(tiny.data, image=image))
    plain, norm = train_set(sample_h5, TRAIN, tiny), train_set(sample_h5, TRAIN, norm_cfg)
    a = batch_to_device(collate(plain.__getitems__([9, 3])), "cpu", tiny.data.image)["image"]
    b = batch_to_device(collate(norm.__getitems__([9, 3])), "cpu", norm_cfg.data.image)["image"]
    mean, std = torch.tensor(image.mean).view(3, 1, 1), torch.tensor(image.std).view(3, 1, 1)
    assert torch.equal(b, (a - mean) / std)
    reader = BioscanH5(sample_h5).group(TRAIN)
    expected = TrainTransform(image)(reader.image_bytes(3), item_seed(tiny.train.seed, 0, 3))
    assert torch.equal(b[1], expected)
    # the same float32 operations as numpy's (x / 255 - mean) / std on every 8-bit value
    u8 = np.arange(256, dtype=np.uint8)
    ref = (u8.astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.25)
    got = pixels_to_float(torch.from_numpy(np.stack([u8] * 3)).view(3, 16, 16), image)[0].flatten().numpy()
    assert np.array_equal(got, ref)
