"""The bundled sample: raw BIOSCAN-5M layout, real DNA/taxonomy, synthetic images, size, licence."""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict

from PIL import Image

from bioclip_cli.data.build_raw import SPLITS_5M
from bioclip_cli.data.sample import sample_metadata_csv, sample_root

COLUMNS_5M = (
    "processid,sampleid,taxon,phylum,class,order,family,subfamily,genus,species,dna_bin,dna_barcode,country,"
    "province_state,coord-lat,coord-lon,image_measurement_value,area_fraction,scale_factor,inferred_ranks,split,"
    "index_bioscan_1M_insect,chunk"
).split(",")


PLACEHOLDER = re.compile(r"\b(sp|cf|nr|aff)\.|\d")  # placeholder species names ("sp.", "cf.", numbers)


def rows():
    with open(sample_metadata_csv(), newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == COLUMNS_5M
        return list(reader)


def test_layout_size_and_documents():
    root = sample_root()
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 10_000_000
    readme = (root / "README.md").read_text()
    assert "**The images are synthetic.**" in readme and "real" in readme
    licence = (root / "LICENSE").read_text()
    assert "CC BY-SA 4.0" in licence and "deWaard et al. 2019" in licence and "BarcodeBERT" in licence


def test_rows_are_the_real_records(realdata):
    with open(realdata / "barcodebert_unseen" / "barcodes.csv", newline="") as fh:
        source = {r["processid"]: r for r in csv.DictReader(fh)}
    sample = rows()
    labelled = [r for r in sample if r["split"] not in ("pretrain", "other_heldout")]
    genera = {r["genus"] for r in labelled}
    assert len(genera) == 36 and len(labelled) == 353
    whole = {pid for pid, r in source.items() if r["genus"] in genera and not PLACEHOLDER.search(r["species"])}
    assert whole == {r["processid"] for r in labelled}  # every named-species record of the 36 genera
    for r in sample:
        src = source[r["processid"]]
        assert r["dna_barcode"] == src["dna_barcode"] and r["sampleid"] == src["sampleid"]
        assert r["dna_bin"] == src["dna_bin"] and r["order"] == src["order"] and r["family"] == src["family"]
        if r["split"] != "pretrain":
            assert (r["genus"], r["species"]) == (src["genus"], src["species"])
        else:
            assert r["species"] == "" and r["genus"] in ("", src["genus"])
    assert set(Counter(r["split"] for r in sample)) == set(SPLITS_5M)


def test_species_split_semantics_and_chunks():
    sample = rows()
    splits_of = defaultdict(Counter)
    for r in sample:
        if r["split"] not in ("pretrain", "other_heldout"):
            splits_of[r["species"]][r["split"]] += 1
    seen = {s for s, c in splits_of.items() if set(c) in ({"train", "val", "test"}, {"train"})}
    unseen = {s for s, c in splits_of.items() if set(c) == {"key_unseen", "val_unseen", "test_unseen"}}
    assert len(seen) == 89 and len(unseen) == 36 and seen | unseen == set(splits_of)
    assert all(c["val"] == c["test"] == 1 for c in splits_of.values() if "val" in c)
    assert all(c["val_unseen"] == c["test_unseen"] >= 1 for s, c in splits_of.items() if s in unseen)
    # one unseen species per genus, and its genus also has seen species
    genus_of = {r["species"]: r["genus"] for r in sample if r["species"]}
    unseen_genera = [genus_of[s] for s in unseen]
    assert len(set(unseen_genera)) == 36 and set(unseen_genera) <= {genus_of[s] for s in seen}
    for r in sample:
        path = sample_root() / "bioscan5m" / "images" / "cropped_256" / r["split"]
        expected_chunk = {"pretrain": 2, "train": 1, "other_heldout": 1}.get(r["split"], 0)
        assert len(r["chunk"]) == expected_chunk
        image = (path / r["chunk"] if r["chunk"] else path) / f"{r['processid']}.jpg"
        with Image.open(image) as img:
            assert img.format == "JPEG" and img.size[1] == 256 and 256 <= img.size[0] <= 372
