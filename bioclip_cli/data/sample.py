"""The bundled sample: a small BIOSCAN-5M-shaped raw release shipped inside the package.

Real DNA barcodes and taxonomy (BOLD public records via BarcodeBERT, CC BY-SA 4.0) with **synthetic**
images drawn procedurally (see `bioclip_cli/sample/README.md`). `bioclip build-hdf5 5m --root
<sample_root()>` turns it into the HDF5 that the `demo` and `tiny` presets read.
"""

from __future__ import annotations

from pathlib import Path

SAMPLE_TOKENIZER = "bioclip-sample"  # text tokenizer name that resolves to the bundled WordPiece vocabulary
SAMPLE_HDF5 = Path("data/sample/BIOSCAN_5M_sample.hdf5")  # where the demo/tiny presets expect the built sample


def sample_root() -> Path:
    """The folder holding `bioscan5m/` (metadata CSV + cropped_256 images) of the bundled sample."""
    return Path(__file__).resolve().parents[1] / "sample"


def sample_metadata_csv() -> Path:
    return sample_root() / "bioscan5m" / "metadata" / "csv" / "BIOSCAN_5M_Insect_Dataset_metadata.csv"


def sample_tokenizer_dir() -> Path:
    """The bundled uncased WordPiece vocabulary (a Hugging Face tokenizer folder)."""
    return sample_root() / "tokenizer"
