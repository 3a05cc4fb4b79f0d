"""Generate the bundled sample (bioclip_cli/sample/) from a folder of real published records. Deterministic.

    python tools/make_sample.py [--realdata FOLDER] [--out bioclip_cli/sample]

FOLDER holds BarcodeBERT's public barcodes (barcodebert_unseen/barcodes.csv) and their PROVENANCE.md; the
default is the maintainers' data folder beside the checkout (not part of the repository).

What it writes (the raw BIOSCAN-5M release layout, so `bioclip build-hdf5 5m` runs on it):
- bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv: real processids, sampleids, BINs, DNA
  barcodes and taxonomy from barcodebert_unseen/barcodes.csv (BOLD public records), in BIOSCAN-5M columns;
- bioscan5m/images/cropped_256/{split}/{chunk}/{processid}.jpg: one **synthetic** 256-px JPEG per specimen,
  drawn procedurally: the body plan follows the order, colours the family, the pattern the genus, its
  details the species, and every specimen varies in pose, size, colour and background;
- tokenizer/: an uncased WordPiece vocabulary (<= 512 entries) over the sample's taxonomy words;
- README.md and LICENSE (data licence and attribution from realdata/PROVENANCE.md).

Rows: whole genera, so that genus and species accuracy tell different stories, as in BIOSCAN-5M. The
source holds 10 records of every genus; `GENERA` of the genera with two or more named species of at least
3 specimens are drawn (by a hash of the name), with all their records of named species. In each genus, the species with the most specimens is
*seen* (train/val/test), the next one with at least 3 specimens is *unseen* (key_unseen/val_unseen/
test_unseen: a new species of a known genus), a third such species is seen again, and the species with 1-2
specimens are seen with `train` rows only (like BIOSCAN-5M's many species without validation specimens).
Extra real records of the same families as `pretrain` (identified to genus at most: their species is
removed, as in BIOSCAN-5M's pretrain split); and records with placeholder species names ("sp.", "cf.") as
`other_heldout`, as in BIOSCAN-5M.
Not shipped in the wheel; rerun it only to regenerate the sample.
"""

from __future__ import annotations

import argparse
import colorsys
import csv
import hashlib
import io
import math
import re
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bioclip_cli.data.taxonomy import NOT_CLASSIFIED, wordpiece_vocabulary  # noqa: E402

COLUMNS = [
    "processid", "sampleid", "taxon", "phylum", "class", "order", "family", "subfamily", "genus", "species",
    "dna_bin", "dna_barcode", "country", "province_state", "coord-lat", "coord-lon", "image_measurement_value",
    "area_fraction", "scale_factor", "inferred_ranks", "split", "index_bioscan_1M_insect", "chunk",
]  # fmt: skip
GENERA = 36  # genera drawn; each has 10 records in the source
MIN_QUERY_SPECIES = 3  # specimens a species needs to get val and test rows (seen) or to be unseen
PRETRAIN_PER_FAMILY = 3  # at most
TRAINING_ROWS = 224  # train + pretrain: 14 batches of 16 (the demo), 28 of 8 (the tests)
OTHER_HELDOUT_SPECIES = 10
JPEG_QUALITY = 82
HEIGHT = 256


def digest(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(parts).encode()).digest()


def rng_for(*parts: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(digest(*parts)[:8], "little"))


def chunk_of(processid: str, split: str) -> str:
    """Chunk folder: 2 hex characters for pretrain, 1 for train and other_heldout, none for the rest."""
    h = hashlib.sha1(processid.encode()).hexdigest()
    return h[:2] if split == "pretrain" else h[:1] if split in ("train", "other_heldout") else ""


# ------------------------------------------------------------------------------------ rows and splits


def species_splits(n: int, unseen: bool) -> list[str]:
    """The splits of a species' `n` specimens (in their hashed order)."""
    if unseen:  # n >= MIN_QUERY_SPECIES: a third of them as val_unseen, as many as test_unseen, the rest keys
        q = max(1, n // 3)
        return ["key_unseen"] * (n - 2 * q) + ["val_unseen"] * q + ["test_unseen"] * q
    if n < MIN_QUERY_SPECIES:
        return ["train"] * n
    return ["train"] * (n - 2) + ["val", "test"]


def select_rows(realdata: Path) -> list[dict]:
    src = list(csv.DictReader(open(realdata / "barcodebert_unseen" / "barcodes.csv", newline="")))
    placeholder = re.compile(r"\b(sp|cf|nr|aff)\.|\d")
    by_genus: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in src:
        if not placeholder.search(r["species"]):
            by_genus[r["genus"]][r["species"]].append(r)
    eligible = [
        g for g, species in by_genus.items() if sum(len(rows) >= MIN_QUERY_SPECIES for rows in species.values()) >= 2
    ]
    genera = sorted(eligible, key=lambda g: digest("genus-pick", g))[:GENERA]
    out = []
    for genus in sorted(genera):
        species = sorted(by_genus[genus].items(), key=lambda kv: (-len(kv[1]), digest("species", kv[0])))
        big = [name for name, rows in species if len(rows) >= MIN_QUERY_SPECIES]
        unseen = big[1]
        for name, rows in species:
            rows = sorted(rows, key=lambda r: digest("order", r["processid"]))
            for r, split in zip(rows, species_splits(len(rows), name == unseen)):
                out.append(dict(r, split=split))
    chosen = {r["processid"] for r in out}
    families = {r["family"] for r in out}
    by_family = defaultdict(list)
    for r in src:
        if r["processid"] not in chosen and r["family"] in families and not placeholder.search(r["species"]):
            by_family[r["family"]].append(r)
    # pretrain: the families' other records, taken family by family in turn until train + pretrain fill
    # TRAINING_ROWS (full batches of the demo and the tests, none dropped)
    queue = []
    for fam, rows in sorted(by_family.items()):
        rows.sort(key=lambda r: digest("pretrain", r["processid"]))
        queue += [(rank, digest("family", fam), r) for rank, r in enumerate(rows[:PRETRAIN_PER_FAMILY])]
    n_pretrain = TRAINING_ROWS - sum(r["split"] == "train" for r in out)
    for _, _, r in sorted(queue, key=lambda t: t[:2])[:n_pretrain]:
        keep_genus = digest("genus", r["processid"])[0] % 2 == 0
        out.append(dict(r, split="pretrain", species="", genus=r["genus"] if keep_genus else ""))
    held = defaultdict(list)
    for r in src:
        if r["processid"] not in chosen and placeholder.search(r["species"]) and r["family"] not in families:
            held[r["species"]].append(r)
    names = sorted((n for n, rows in held.items() if len(rows) >= 2), key=lambda n: digest("held", n))
    for name in names[:OTHER_HELDOUT_SPECIES]:
        for r in sorted(held[name], key=lambda r: r["processid"])[:3]:
            out.append(dict(r, split="other_heldout"))
    out.sort(key=lambda r: r["processid"])
    return out


def metadata_row(r: dict) -> dict:
    taxon = next((r[k] for k in ("species", "genus", "family", "order") if r[k]), "")
    return {
        "processid": r["processid"],
        "sampleid": r["sampleid"],
        "taxon": taxon,
        "phylum": r["phylum"],
        "class": r["class"],
        "order": r["order"],
        "family": r["family"],
        "subfamily": "",
        "genus": r["genus"],
        "species": r["species"],
        "dna_bin": r["dna_bin"],
        "dna_barcode": r["dna_barcode"],
        "inferred_ranks": "0",
        "split": r["split"],
        "chunk": chunk_of(r["processid"], r["split"]),
    }


# ---------------------------------------------------------------------------------- procedural images

PLANS = {  # order -> body plan
    "Diptera": "fly",
    "Lepidoptera": "moth",
    "Hemiptera": "bug",
    "Coleoptera": "beetle",
    "Hymenoptera": "wasp",
    "Psocodea": "louse",
}
PATTERNS = ("bands", "spots", "stripe", "plain", "chevrons", "dots")


def hsv(h: float, s: float, v: float, a: int = 255) -> tuple[int, int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1))
    return int(r * 255), int(g * 255), int(b * 255), a


def traits(order: str, family: str, genus: str, species: str) -> dict:
    """Class-level drawing parameters: order -> plan, family -> colours/proportions, genus -> pattern, species -> details."""
    f, g, s = rng_for("family", family), rng_for("genus", genus), rng_for("species", species)
    return {
        "plan": PLANS.get(order, ("fly", "moth", "bug", "beetle", "wasp", "louse")[digest(order)[0] % 6]),
        "hue": f.uniform(0, 1),
        "sat": f.uniform(0.35, 0.9),
        "val": f.uniform(0.25, 0.75),
        "abdomen": f.uniform(0.42, 0.62),  # abdomen length, in body lengths
        "width": f.uniform(0.16, 0.3),  # body width
        "pattern": PATTERNS[int(g.integers(len(PATTERNS)))],
        "hue2": g.uniform(0, 1),
        "wing_tint": g.uniform(0, 1),
        "antenna": g.uniform(0.15, 0.5),
        "count": int(s.integers(2, 6)),  # bands / spots / chevrons
        "mark": s.uniform(0.25, 0.6),  # pattern size
        "val2": s.uniform(0.55, 1.0),
        "wing_spread": s.uniform(0.35, 0.95),  # radians from the body axis
        "leg_len": s.uniform(0.25, 0.5),
        "eye": s.uniform(0.5, 1.0),
    }


def rotate(points, angle, cx, cy):
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def ellipse(cx, cy, rx, ry, angle=0.0, n=48):
    pts = [(rx * math.cos(2 * math.pi * i / n), ry * math.sin(2 * math.pi * i / n)) for i in range(n)]
    return rotate(pts, angle, cx, cy)


def draw_insect(t: dict, r: np.random.Generator, size: int) -> Image.Image:
    """The insect on a transparent square layer, head to the right, body length ~0.8 size."""
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    L = size * 0.5 * r.uniform(0.85, 1.1)
    cx, cy = size / 2, size / 2
    jit = lambda v, a=0.04: v + r.normal(0, a)  # noqa: E731 - per-specimen jitter
    body = hsv(jit(t["hue"], 0.015), jit(t["sat"], 0.05), jit(t["val"], 0.05))
    mark = hsv(jit(t["hue2"], 0.015), 0.8, jit(t["val2"], 0.05))
    dark = hsv(t["hue"], 0.5, 0.15)
    w = t["width"] * L
    abd_len = t["abdomen"] * L
    ax, tx, hx = cx - 0.25 * L, cx + 0.1 * L, cx + 0.33 * L
    plan = t["plan"]
    # legs (under the body)
    for side in (-1, 1):
        for k, base in enumerate((-0.06, 0.06, 0.16)):
            x0, y0 = tx + base * L - 0.05 * L, cy
            ang = side * (math.pi / 2 + (k - 1) * 0.6 + r.normal(0, 0.08))
            ll = t["leg_len"] * L
            x1, y1 = x0 + ll * 0.5 * math.cos(ang), y0 + ll * 0.5 * math.sin(ang)
            x2, y2 = x1 + ll * 0.6 * math.cos(ang - side * 0.5), y1 + ll * 0.6 * math.sin(ang - side * 0.5)
            d.line([(x0, y0), (x1, y1), (x2, y2)], fill=dark, width=max(2, int(L * 0.018)))
    # antennae
    for side in (-1, 1):
        ang = side * (0.35 + r.normal(0, 0.05))
        al = t["antenna"] * L * (1.6 if plan in ("moth", "louse") else 1.0)
        x1, y1 = hx + 0.06 * L, cy + side * 0.03 * L
        if plan == "wasp":  # elbowed
            xm, ym = x1 + al * 0.4 * math.cos(ang), y1 + al * 0.4 * math.sin(ang)
            x2, y2 = xm + al * 0.6 * math.cos(ang + side * 0.8), ym + al * 0.6 * math.sin(ang + side * 0.8)
            d.line([(x1, y1), (xm, ym), (x2, y2)], fill=dark, width=max(2, int(L * 0.012)))
        else:
            x2, y2 = x1 + al * math.cos(ang), y1 + al * math.sin(ang)
            d.line([(x1, y1), (x2, y2)], fill=dark, width=max(2, int(L * 0.012)))
            if plan == "moth":
                d.ellipse([x2 - L * 0.02, y2 - L * 0.02, x2 + L * 0.02, y2 + L * 0.02], fill=dark)
    # wings under the body for flies, wasps, moths, lice
    spread = jit(t["wing_spread"], 0.05)
    if plan in ("fly", "wasp", "louse", "moth"):
        wl = L * (0.75 if plan == "moth" else 0.6)
        ww = wl * (0.55 if plan == "moth" else 0.3)
        tint = hsv(t["wing_tint"], 0.25, 0.95, 110) if plan != "moth" else hsv(t["hue2"], t["sat"], 0.6, 255)
        pairs = (0, 1) if plan in ("wasp", "moth") else (0,)
        for side in (-1, 1):
            for p in pairs:
                ang = math.pi - side * (spread + 0.35 * p)
                ex = tx + math.cos(ang) * wl * 0.45
                ey = cy + math.sin(ang) * wl * 0.45
                scale = 0.75 if p else 1.0
                d.polygon(ellipse(ex, ey, wl * 0.5 * scale, ww * 0.5 * scale, ang), fill=tint, outline=dark)
                if plan == "moth":  # eyespot or band on the fore wing
                    for k in range(min(t["count"], 3)):
                        fx = ex + math.cos(ang) * wl * (0.25 - 0.18 * k)
                        fy = ey + math.sin(ang) * wl * (0.25 - 0.18 * k)
                        rad = ww * 0.18 * t["mark"] * 2
                        d.ellipse([fx - rad, fy - rad, fx + rad, fy + rad], fill=mark)
                elif p == 0:  # veins
                    for k in (-0.25, 0.0, 0.25):
                        x0, y0 = tx, cy
                        x1 = ex + math.cos(ang) * wl * 0.45 + k * ww * math.sin(ang)
                        y1 = ey + math.sin(ang) * wl * 0.45 - k * ww * math.cos(ang)
                        d.line([(x0, y0), (x1, y1)], fill=hsv(t["wing_tint"], 0.4, 0.4, 140), width=2)
    # abdomen, with the genus pattern
    waist = plan == "wasp"
    d.polygon(
        ellipse(ax - (0.05 * L if waist else 0), cy, abd_len / 2, w / 2 * (1.2 if plan == "bug" else 1)), fill=body
    )
    draw_pattern(d, t, r, ax, cy, abd_len, w, mark)
    # thorax, head, eyes
    d.polygon(ellipse(tx, cy, 0.12 * L, w * 0.42), fill=body)
    if waist:
        d.line([(ax + abd_len / 2 - 0.06 * L, cy), (tx - 0.1 * L, cy)], fill=body, width=max(3, int(w * 0.25)))
    hr = 0.08 * L * (1.2 if plan == "fly" else 1.0)
    d.ellipse([hx - hr, cy - hr, hx + hr, cy + hr], fill=body)
    eye_col = hsv(0.0, 0.8, 0.55) if plan == "fly" else dark
    er = hr * 0.55 * t["eye"]
    for side in (-1, 1):
        ex, ey = hx + hr * 0.35, cy + side * hr * 0.55
        d.ellipse([ex - er, ey - er, ex + er, ey + er], fill=eye_col)
    # covers drawn over the abdomen: elytra (beetles), hemelytra (bugs)
    if plan in ("beetle", "bug"):
        cover = hsv(t["hue"], t["sat"], t["val"] * 0.8)
        length = abd_len * (1.0 if plan == "beetle" else 0.75)
        for side in (-1, 1):
            pts = ellipse(ax + abd_len * 0.05, cy + side * w * 0.24, length / 2, w * 0.3)
            d.polygon(pts, fill=cover, outline=dark)
        d.line([(ax - length / 2, cy), (ax + length / 2 + abd_len * 0.05, cy)], fill=dark, width=2)
        for k in range(t["count"] if t["pattern"] != "plain" else 0):
            sx = ax - length / 2 + length * (k + 0.5) / t["count"]
            rad = w * 0.08 * (1 + t["mark"])
            for side in (-1, 1):
                sy = cy + side * w * 0.22
                d.ellipse([sx - rad, sy - rad, sx + rad, sy + rad], fill=mark)
    return layer


def draw_pattern(d, t, r, ax, cy, length, w, mark) -> None:
    n, kind = t["count"], t["pattern"]
    x0 = ax - length / 2
    if kind == "bands":
        for k in range(n):
            x = x0 + length * (k + 0.7) / (n + 0.5)
            d.line([(x, cy - w * 0.42), (x, cy + w * 0.42)], fill=mark, width=max(2, int(w * 0.18 * t["mark"])))
    elif kind in ("spots", "dots"):
        rad = w * (0.14 if kind == "spots" else 0.07) * (1 + t["mark"])
        for k in range(n):
            x = x0 + length * (k + 0.8) / (n + 0.8)
            for side in (-1, 1) if kind == "spots" else (0,):
                y = cy + side * w * 0.18
                d.ellipse([x - rad, y - rad, x + rad, y + rad], fill=mark)
    elif kind == "stripe":
        d.polygon(ellipse(ax, cy, length * 0.45, w * 0.12 * (1 + t["mark"])), fill=mark)
    elif kind == "chevrons":
        for k in range(n):
            x = x0 + length * (k + 0.8) / (n + 0.8)
            h = w * 0.35
            d.line([(x - h * 0.5, cy - h), (x, cy), (x - h * 0.5, cy + h)], fill=mark, width=max(2, int(w * 0.1)))


def draw_specimen(r: dict) -> bytes:
    """One synthetic 256-px JPEG for a specimen (true species used for the drawing, even when hidden)."""
    t = traits(r["order"], r["family"], r["genus_true"], r["species_true"])
    g = rng_for("specimen", r["processid"])
    width = int(round(HEIGHT * g.uniform(1.0, 1.45)))
    ss = 2  # supersampling
    W, H = width * ss, HEIGHT * ss
    base = np.array(hsv(g.uniform(0, 1), g.uniform(0.0, 0.12), g.uniform(0.78, 0.95))[:3], dtype=np.float32)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    shade = 1.0 + 0.08 * ((xx / W - 0.5) * g.normal() + (yy / H - 0.5) * g.normal())
    bg = np.clip(base[None, None, :] * shade[..., None], 0, 255).astype(np.uint8)
    canvas = Image.fromarray(bg, "RGB")
    side = int(min(W, H) * 1.25)
    insect = draw_insect(t, g, side)
    insect = insect.rotate(float(g.uniform(-180, 180)), resample=Image.Resampling.BICUBIC, expand=False)
    shadow = Image.new("RGBA", insect.size, (0, 0, 0, 0))
    shadow.putalpha(insect.getchannel("A").point(lambda a: a // 4))
    shadow = shadow.filter(ImageFilter.GaussianBlur(6))
    ox = int(W / 2 - side / 2 + g.normal(0, W * 0.04))
    oy = int(H / 2 - side / 2 + g.normal(0, H * 0.04))
    canvas.paste(shadow, (ox + 6, oy + 8), shadow)
    canvas.paste(insect, (ox, oy), insect)
    img = canvas.resize((width, HEIGHT), Image.Resampling.LANCZOS)
    light = g.uniform(0.9, 1.08)
    arr = np.asarray(img, dtype=np.float32) * light + g.normal(0, 2.0, size=(HEIGHT, width, 1))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------- documents

README = """# The bundled BIOSCAN-5M-style sample

A small dataset in the layout of the raw BIOSCAN-5M release, so that `bioclip build-hdf5 5m --root <this
folder>` runs on it; `bioclip demo`, the `tiny`/`demo` presets and the tests use it.

**The images are synthetic.** No photograph exists for these specimens in any source we may redistribute,
so `tools/make_sample.py` draws one 256-px JPEG per specimen procedurally: the body plan follows the order,
the colours and proportions the family, the pattern the genus, its details the species, and every specimen
varies in pose, size, colour, lighting and background. An image model can learn the taxonomy from them,
but they say nothing about real insects; never report numbers on them as results about real data.

**The DNA barcodes and the taxonomy are real**: public BOLD records of the Canadian invertebrate reference
library as curated in BarcodeBERT (`data/unseen.tsv`), with their real processids, sampleids and BINs.

| split | rows | what |
|---|---|---|
{split_table}

- Whole genera ({n_genera}, each with all its records of named species in the source), so that a genus holds several
  species: in each, the species with the most specimens is seen ({n_val} seen species have `val` and `test`
  specimens, the rest of the {n_seen} seen species only `train` ones), and one species with at least 3
  specimens is unseen ({n_unseen} species: `key_unseen`, `val_unseen`, `test_unseen`) -- a new species of a
  known genus, as in BIOSCAN-5M. In the built HDF5, every `val_seen` species is among the `all_keys` (via
  `train`), the `val_unseen` species are among them only via `key_unseen`, and every `val_unseen` species'
  genus also has seen species, so an unseen query can be placed in the right genus but not the right species
  by its seen neighbours.
- `pretrain`: other real records of the same families, with their species removed (and, for about half,
  their genus), like BIOSCAN-5M's pretrain split of specimens not identified to species.
- `other_heldout`: real records with placeholder species names (`sp.`, `cf.`), as in BIOSCAN-5M.
- Columns without a value in the source (subfamily, country, coordinates, image measurements) are empty.
  `chunk` folders (2 hex characters for pretrain, 1 for train and other_heldout) come from the processid's SHA-1.
- `tokenizer/`: an uncased BERT WordPiece vocabulary ({vocab_size} entries) over this sample's taxonomy
  words plus single characters; the text tokenizer name `bioclip-sample` resolves to it.

Licence and attribution: see `LICENSE` in this folder.
"""

LICENSE = """The bundled sample of bioscan-clip: licence and attribution

DNA barcodes and taxonomy (bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv)
----------------------------------------------------------------------------------------
Public records of the Barcode of Life Data System. Licence: Creative Commons Attribution-ShareAlike 4.0
International (CC BY-SA 4.0), https://creativecommons.org/licenses/by-sa/4.0/
Attribution: "DNA barcodes and taxonomy: Barcode of Life Data System (BOLD, boldsystems.org), Canadian
invertebrate reference library (deWaard et al. 2019, Scientific Data 6:308), as curated in BarcodeBERT
(Millan Arias et al., 'BarcodeBERT: Transformers for Biodiversity Analyses', Bioinformatics Advances 2026,
doi:10.1093/bioadv/vbag054)."
Source file: github.com/bioscan-ml/BarcodeBERT, data/unseen.tsv, blob aab3f8204140e77fb54dceb2ac2085e8d6d1f147
at commit aa6d04f87a27cc760302c3bb1a987f9a87087aa5 (repository: MIT, Copyright (c) 2023 Kari Genomics Lab).
Changes: columns renamed to the BIOSCAN-5M names; split assigned; species (and some genus) labels removed
from the pretrain rows; empty columns added.

Images (bioscan5m/images/)
--------------------------
Synthetic drawings made by tools/make_sample.py of bioscan-clip; they depict no real specimen.
Released with the data above under CC BY-SA 4.0.

Tokenizer vocabulary (tokenizer/)
---------------------------------
Derived from the taxonomy above; CC BY-SA 4.0.
"""


def write_tokenizer(folder: Path, rows: list[dict]) -> int:
    from transformers import BertTokenizerFast

    words = [NOT_CLASSIFIED] + [r[k] for r in rows for k in ("order", "family", "genus", "species") if r[k]]
    vocab = wordpiece_vocabulary(words, max_size=512)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    ids = {token: i for i, token in enumerate(vocab)}
    try:  # transformers >= 5 takes the vocabulary itself
        tok = BertTokenizerFast(vocab=ids, do_lower_case=True, model_max_length=512)
    except TypeError:
        tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True, model_max_length=512)
    tok.save_pretrained(str(folder))
    return len(vocab)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", type=Path, default=REPO.parent / "shared" / "realdata")
    parser.add_argument("--out", type=Path, default=REPO / "bioclip_cli" / "sample")
    args = parser.parse_args(argv)
    out: Path = args.out
    rows = select_rows(args.realdata)
    for sub in ("bioscan5m", "tokenizer"):
        shutil.rmtree(out / sub, ignore_errors=True)
    meta = [metadata_row(r) for r in rows]
    csv_path = out / "bioscan5m" / "metadata" / "csv" / "BIOSCAN_5M_Insect_Dataset_metadata.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(meta)
    total = csv_path.stat().st_size
    for r, m in zip(rows, meta):
        truth = {rank: _true_rank(args.realdata, r["processid"], rank) for rank in ("genus", "species")}
        folder = out / "bioscan5m" / "images" / "cropped_256" / m["split"]
        if m["chunk"]:
            folder = folder / m["chunk"]
        folder.mkdir(parents=True, exist_ok=True)
        data = draw_specimen(dict(r, genus_true=truth["genus"], species_true=truth["species"]))
        (folder / f"{r['processid']}.jpg").write_bytes(data)
        total += len(data)
    vocab_size = write_tokenizer(out / "tokenizer", meta)
    splits = defaultdict(int)
    for m in meta:
        splits[m["split"]] += 1
    what = {
        "pretrain": "seen-family records, species removed",
        "train": "seen species (keys)",
        "val": "seen species (queries)",
        "test": "seen species (queries)",
        "key_unseen": "unseen species (keys)",
        "val_unseen": "unseen species (queries)",
        "test_unseen": "unseen species (queries)",
        "other_heldout": "placeholder species names",
    }
    table = "\n".join(f"| {s} | {splits[s]} | {what[s]} |" for s in what)
    n_unseen = len({m["species"] for m in meta if m["split"] == "key_unseen"})
    n_seen = len({m["species"] for m in meta if m["split"] == "train"})
    n_val = len({m["species"] for m in meta if m["split"] == "val"})
    n_genera = len({m["genus"] for m in meta if m["split"] in ("train", "key_unseen")})
    counts = dict(n_seen=n_seen, n_val=n_val, n_unseen=n_unseen, n_genera=n_genera, vocab_size=vocab_size)
    (out / "README.md").write_text(README.format(split_table=table, **counts))
    (out / "LICENSE").write_text(LICENSE)
    print(f"{len(meta)} rows, {dict(splits)}, vocabulary {vocab_size}, {total / 1e6:.2f} MB of CSV + images")


_SOURCE: dict[str, dict] = {}


def _true_rank(realdata: Path, processid: str, rank: str) -> str:
    if not _SOURCE:
        for r in csv.DictReader(open(realdata / "barcodebert_unseen" / "barcodes.csv", newline="")):
            _SOURCE[r["processid"]] = r
    return _SOURCE[processid][rank]


if __name__ == "__main__":
    main()
