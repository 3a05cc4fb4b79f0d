"""The typed configuration: presets, inheritance, overrides, refusals, round trip."""

from __future__ import annotations

import pytest
import yaml

from bioclip_cli.config import load_config, load_run_config, preset_dict, preset_names, save_config, to_dict
from bioclip_cli.config.loader import parse_set
from bioclip_cli.errors import ConfigError

PAPER = ["none-1m", "id-1m", "idt-1m", "none-5m", "id-5m", "idt-5m"]


def test_the_six_paper_presets_and_the_small_ones_exist():
    names = preset_names()
    for name in [*PAPER, "tiny", "demo", "idt-5m-clibd", "idt-1m-clibd"]:
        assert name in names
    assert not [n for n in names if n.startswith("_")], "building blocks are hidden"


@pytest.mark.parametrize("name", PAPER)
def test_paper_presets_carry_the_v1_recipe(name):
    cfg = load_config(name)
    dataset = name.split("-")[1]
    assert cfg.name == name
    assert cfg.train.batch_size == 400
    assert cfg.train.epochs == (15 if dataset == "1m" else 4)
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay, cfg.train.scheduler) == (
        "adam",
        1e-3,
        0.0,
        "constant",
    )
    assert cfg.model.logit_scale == pytest.approx(1 / 0.07)
    assert cfg.model.learn_logit_scale is False
    assert cfg.train.precision == "fp32" and cfg.train.loss == "local"
    assert cfg.model.output_dim == 768
    for enc in (cfg.model.image, cfg.model.dna, cfg.model.text):
        assert enc.finetune == "lora"
        assert (enc.lora.r, enc.lora.lora_alpha, enc.lora.dropout) == (4, 4.0, 0.0)
        assert enc.lora.target_modules == ["query", "value"]
    assert (cfg.data.dna.k, cfg.data.dna.max_len, cfg.data.dna.prefix_id) == (5, 660, 0)
    assert cfg.model.dna.pooling == "softmax-mean" and cfg.model.text.pooling == "mean-all"
    assert cfg.data.text.max_len == 20
    img = cfg.data.image
    assert (img.resize, img.crop, img.scale, img.hflip, img.vflip, img.rotation) == (
        256,
        224,
        [0.08, 1.0],
        True,
        True,
        45.0,
    )
    assert img.mean is None and img.std is None
    assert (
        cfg.data.hdf5
        == {
            "5m": "data/BIOSCAN_5M/BIOSCAN_5M.hdf5",
            "1m": "data/BIOSCAN_1M/split_data/BioScan_data_in_splits.hdf5",
        }[dataset]
    )
    assert cfg.model.image.weights == "google/vit-base-patch16-224"
    assert cfg.model.text.weights == "prajjwal1/bert-small"
    assert cfg.model.dna.weights == "ckpt/BarcodeBERT/5_mer/model_41.pth"
    assert cfg.model.image.layer_norm_eps == 1e-6
    expected = {"none": ["image", "dna", "text"], "id": ["image", "dna"], "idt": ["image", "dna", "text"]}[
        name.split("-")[0]
    ]
    assert cfg.model.modalities == expected
    assert cfg.train.enabled is (not name.startswith("none"))


def test_clibd_presets_switch_to_the_v2_recipe():
    cfg = load_config("idt-5m-clibd")
    assert (cfg.train.optimizer, cfg.train.weight_decay, cfg.train.scheduler) == ("adamw", 0.01, "onecycle")
    assert cfg.train.lr == 5e-5 and cfg.train.lr_reference_batch == 500
    assert cfg.model.learn_logit_scale and cfg.train.loss == "gathered" and cfg.train.precision == "bf16"
    assert {cfg.model.image.finetune, cfg.model.dna.finetune, cfg.model.text.finetune} == {"full"}
    assert cfg.train.epochs == 20 and load_config("idt-1m-clibd").train.epochs == 50
    assert cfg.data.hdf5.endswith("BIOSCAN_5M.hdf5")  # inherited from idt-5m


def test_inheritance_merges_sections_not_replaces_them(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("base: idt-5m\ntrain: {batch_size: 64}\nmodel: {image: {lora: {r: 8}}}\n")
    cfg = load_config(str(child))
    assert cfg.train.batch_size == 64
    assert cfg.train.epochs == 4  # from idt-5m
    assert cfg.model.image.lora.r == 8 and cfg.model.image.lora.target_modules == ["query", "value"]
    assert cfg.name == "child"


def test_precedence_preset_then_files_then_sets(tmp_path):
    f1 = tmp_path / "a.yaml"
    f1.write_text("train: {batch_size: 100, lr: 0.5}\n")
    f2 = tmp_path / "b.yaml"
    f2.write_text("train: {batch_size: 200}\n")
    cfg = load_config("idt-5m", [f1, f2], ["train.batch_size=300"])
    assert cfg.train.batch_size == 300 and cfg.train.lr == 0.5


@pytest.mark.parametrize(
    ("item", "path", "expected"),
    [
        ("train.lr=1e-4", ("train", "lr"), 1e-4),
        ("train.batch_size=64", ("train", "batch_size"), 64),
        ("eval.k=1,3", ("eval", "k"), [1, 3]),
        ("eval.k=[5]", ("eval", "k"), [5]),
        ("train.grad_clip=null", ("train", "grad_clip"), None),
        ("train.grad_clip=1", ("train", "grad_clip"), 1.0),
        ("train.enabled=no", ("train", "enabled"), False),
        ("model.modalities=image,dna", ("model", "modalities"), ["image", "dna"]),
        ("model.image.lora.target_modules=query,key,value", ("model", "image"), None),
    ],
)
def test_set_converts_to_the_declared_type(item, path, expected):
    cfg = load_config("idt-5m", sets=[item])
    value = getattr(getattr(cfg, path[0]), path[1])
    if expected is None and path[1] == "image":
        assert value.lora.target_modules == ["query", "key", "value"]
    else:
        assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (["train.bogus=1"], "unknown configuration key 'train.bogus'; valid keys in train: enabled, epochs"),
        (["bogus.x=1"], "unknown configuration key 'bogus'"),
        (["train.optimizer=sgd"], "train.optimizer: 'sgd' is not valid; choose one of adam, adamw"),
        (["train.batch_size=abc"], "train.batch_size: 'abc' is not an integer"),
        (["train.batch_size=1.5"], "train.batch_size: 1.5 is not an integer"),
        (["train.batch_size=1"], "train.batch_size: must be >= 2"),
        (["train.lr=-1"], "train.lr: must be > 0"),
        (["model.modalities=image,photo"], "model.modalities[1]: 'photo' is not valid; choose one of image, dna, text"),
        (["data.image.crop=300"], "data.image.crop: must be in 1..resize (256)"),
        (["data.dna.k=4"], "model.dna.vocab_size: must be 4**k + 3 = 259"),
        (["train.enabled=maybe"], "train.enabled: 'maybe' is not true or false"),
        (["train"], "must look like section.key=value"),
    ],
)
def test_refusals_name_the_key_value_and_choices(sets, needle):
    with pytest.raises(ConfigError) as info:
        load_config("idt-5m", sets=sets)
    assert needle in str(info.value)


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        load_config("idt-9m")
    assert "unknown preset 'idt-9m'" in str(info.value) and "idt-5m" in str(info.value)


def test_inheritance_loop_is_refused(tmp_path):
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop\n")
    (tmp_path / "x.yaml").write_text("")
    with pytest.raises(ConfigError):
        load_config(str(loop))


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config("idt-5m-clibd", sets=["train.batch_size=8", "eval.k=1,5"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_run_config(tmp_path / "config.yaml") == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == to_dict(cfg)


def test_every_preset_resolves_and_validates():
    for name in preset_names():
        cfg = load_config(name)
        assert cfg.name == name
        assert preset_dict(name)["description"]


def test_parse_set_nests_keys():
    assert parse_set("a.b.c=3") == {"a": {"b": {"c": 3}}}
