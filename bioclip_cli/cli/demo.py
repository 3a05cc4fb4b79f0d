"""`bioclip demo`: the whole method on the bundled sample, in minutes on a laptop CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bioclip_cli.cli.options import examples
from bioclip_cli.errors import NotAvailableYet

EXAMPLES = examples("bioclip demo", "bioclip demo --out runs/demo --epochs 4")


def command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to create.")] = Path("runs/demo"),
) -> None:
    """Build the sample HDF5, evaluate the untrained baseline, train a small model, embed, evaluate, compare."""
    raise NotAvailableYet("bioclip demo (end-to-end walkthrough)")
