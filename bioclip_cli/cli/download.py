"""`bioclip download`: verified, resumable downloads of data, checkpoints, encoders and embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from bioclip_cli.cli.options import FormatOpt, OutputOpt, PresetOpt, examples
from bioclip_cli.errors import BioclipError

EXAMPLES = examples(
    "bioclip download 5m --dry-run",
    "bioclip download 5m --dry-run --format csv --output plan.csv",
    "bioclip download 5m --what raw --root data/",
    "bioclip download checkpoints --preset idt-5m",
    "bioclip download embeddings --preset idt-1m",
    "bioclip download insect --root data/",
)
NO_ARGS_IS_HELP = True


def _complete_target(incomplete: str) -> list[str]:
    from bioclip_cli.data.artifacts import TARGETS

    return [name for name in TARGETS if name.startswith(incomplete)]


def command(
    target: Annotated[
        str,
        typer.Argument(
            help="What to fetch: 5m, 1m, insect, checkpoints, embeddings or encoders.", autocompletion=_complete_target
        ),
    ],
    what: Annotated[
        Literal["hdf5", "raw", "metadata", "partition"],
        typer.Option(
            "--what",
            help="For 5m/1m/insect: hdf5 (pre-built; insect: the processed release), raw (metadata + images), "
            "metadata, partition.",
        ),
    ] = "hdf5",
    preset: PresetOpt = None,
    root: Annotated[
        Path, typer.Option("--root", help="Put everything under this folder (encoders go to the Hugging Face cache).")
    ] = Path("."),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be fetched; write nothing.")] = False,
    mirror: Annotated[
        str | None,
        typer.Option("--mirror", help="Fetch the same paths from this base URL instead.", show_default=False),
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Files downloaded in parallel.")] = 2,
    allow_unverified: Annotated[
        bool,
        typer.Option(
            "--allow-unverified", help="Accept a hub file whose sha256 cannot be read (it is still format-checked)."
        ),
    ] = False,
    format: FormatOpt = "table",
    output: OutputOpt = None,
) -> None:
    """Download the BIOSCAN and INSECT datasets, checkpoints, pretrained encoders or released embeddings.

    Every file is fetched to `<dest>.part` with HTTP range resume, checked against its published
    size and checksum (or, where none is published, checked to be a readable file of its kind), and only
    then renamed into place; re-running skips verified files.
    """
    from bioclip_cli.cli.output import emit, hint, info, success
    from bioclip_cli.workflows.download import (
        download,
        next_command,
        plan_downloads,
        raise_failures,
        verification_counts,
    )

    if jobs < 1:
        raise BioclipError(f"--jobs must be at least 1, got {jobs}")
    plan = plan_downloads(target, what, preset, root, mirror)
    if not plan:
        info(f"preset {preset} needs nothing from `{target}`; nothing to do")
        return
    results = download(plan, jobs=jobs, dry_run=dry_run, allow_unverified=allow_unverified)
    title = "bioclip download --dry-run: nothing was written" if dry_run else f"bioclip download {target}"
    emit([r.row() for r in results], format, output, title=title, fold=True)
    for pf in plan:
        if pf.artifact.note:
            info(f"note: {pf.name}: {pf.artifact.note}")
    if dry_run:
        hint(f"bioclip download {' '.join(_args(target, what, preset, root, mirror))}")
        return
    raise_failures(results)
    counts = verification_counts(results)
    fetched = ", ".join(f"{n} {how}" for how, n in counts.items()) if any(counts.values()) else "none fetched now"
    success(f"{len(results)} file(s) in place under {root} ({fetched})")
    follow_up = next_command(target, what, root, results)
    if follow_up:
        hint(follow_up)


def _args(target: str, what: str, preset: str | None, root: Path, mirror: str | None) -> list[str]:
    """The same command without --dry-run, to copy."""
    args = [target]
    if target in ("5m", "1m", "insect") and what != "hdf5":
        args += ["--what", what]
    for flag, value in (("--preset", preset), ("--mirror", mirror)):
        if value:
            args += [flag, value]
    if root != Path("."):
        args += ["--root", str(root)]
    return args
