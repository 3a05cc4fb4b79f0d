"""The paper-size model (idt-5m shapes) with random weights: exact parameter counts, the `--params`
command, and one forward per encoder on CPU."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli

from bioclip_cli.config import load_config
from bioclip_cli.models import build_model, parameter_rows

IDT_5M_TRAINABLE = {"image": 738_048, "dna": 738_048, "text": 426_752, "all": 1_902_848}


def test_idt_5m_trainable_parameters_are_the_papers():
    rows = {r["encoder"]: r for r in parameter_rows(load_config("idt-5m").model)}
    assert {name: rows[name]["trainable"] for name in IDT_5M_TRAINABLE} == IDT_5M_TRAINABLE
    assert rows["image"]["lora"] == 147_456 and rows["image"]["head"] == 590_592
    assert rows["dna"]["lora"] == 147_456 and rows["dna"]["head"] == 590_592
    assert rows["text"]["lora"] == 32_768 and rows["text"]["head"] == 393_984
    assert rows["image"]["total"] == 86_536_704  # ViT-B/16 without pooler (85,798,656) + head + LoRA


@pytest.mark.slow
def test_presets_params_command_prints_the_counts(tmp_path):
    result = run_cli("presets", "idt-5m", "--params", "--json", str(tmp_path / "params.json"))
    assert result.returncode == 0, result.stderr
    for number in ("738,048", "147,456", "590,592", "426,752", "32,768", "393,984", "1,902,848"):
        assert number in result.stdout
    rows = {r["encoder"]: r for r in json.loads((tmp_path / "params.json").read_text())}
    assert rows["all"]["trainable"] == 1_902_848


@pytest.mark.slow
def test_paper_size_forward_of_each_encoder():
    cfg = load_config("idt-5m").model
    model = build_model(cfg, pretrained=False).eval()
    dna = torch.randint(3, 1027, (1, 133))
    dna[0, 0] = 0
    text = torch.zeros(1, 20, dtype=torch.long)
    text[0, :8] = torch.tensor([101, 2000, 3000, 4000, 5000, 6000, 7000, 102])
    batch = {
        "image": torch.rand(1, 3, 224, 224),
        "dna": dna,
        "dna_mask": torch.ones(1, 133, dtype=torch.long),
        "text": text,
        "text_mask": (text > 0).long(),
        "text_type": torch.zeros(1, 20, dtype=torch.long),
    }
    with torch.inference_mode():
        out = model(batch)
    for name in ("image", "dna", "text"):
        assert out[name].shape == (1, 768)
        assert torch.isfinite(out[name]).all()
        assert out[name].norm().item() == pytest.approx(1.0, abs=1e-5)
    assert model.image.vit.config.layer_norm_eps == 1e-6
    assert model.dna.bert.config.vocab_size == 1027


@pytest.mark.slow
def test_presets_params_error_is_one_line():
    result = run_cli("presets", "tiny", "--params", "--set", "model.image.lora.target_modules=[qkv]")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "model.image.lora.target_modules" in errors[0]
