"""`bioclip zsl`: find the INSECT metadata and the two BZSL embedding files, run BZSL, save the results.

Inputs: an INSECT run (`<run>/embeddings/bzsl/` as `bioclip embed --format bzsl-csv` writes it) or the
original pipeline's trio (`INSECT_metadata.csv`, `image_embedding_from_bioscan_clip.csv`,
`dna_embedding_from_bioscan_clip.csv`); a file given explicitly wins over the run's. The model, the
tuning and the scores are :mod:`bioclip_cli.retrieval.bzsl_tuning`; this module checks that the inputs fit
together and the options make sense, and writes `<run>/results/zsl.json` for a run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bioclip_cli.atomic_write import write_text
from bioclip_cli.data.bzsl_csv import DNA_CSV, IMAGE_CSV, read_dna_class_embeddings, read_image_embeddings
from bioclip_cli.data.insect_table import InsectTable, read_insect_metadata
from bioclip_cli.errors import BioclipError, ConfigError, DataError
from bioclip_cli.retrieval.bzsl import COVARIANCES, BzslParams
from bioclip_cli.retrieval.bzsl_tuning import FIT_ON, BzslResult, genus_ids, insect_defaults, run_bzsl

METADATA_CSV = "INSECT_metadata.csv"
RUN_FOLDER = ("embeddings", "bzsl")


@dataclass
class ZslOutcome:
    result: BzslResult
    metadata: Path
    image_embeddings: Path
    dna_embeddings: Path
    saved: Path | None


def zsl_input_paths(
    run: Path | None, metadata: Path | None, image_embeddings: Path | None, dna_embeddings: Path | None
) -> tuple[Path, Path, Path]:
    """The three input files: explicit paths, else the run's `embeddings/bzsl/` files."""
    if run is None and None in (metadata, image_embeddings, dna_embeddings):
        missing = [flag for flag, p in (("--metadata", metadata), ("--image-embeddings", image_embeddings),
                                        ("--dna-embeddings", dna_embeddings)) if p is None]  # fmt: skip
        raise BioclipError(
            f"give an INSECT run (--run) or all three input files (missing: {', '.join(missing)})",
            "bioclip zsl --metadata INSECT_metadata.csv --image-embeddings image_embedding_from_bioscan_clip.csv "
            "--dna-embeddings dna_embedding_from_bioscan_clip.csv",
        )
    paths = []
    folder = Path(run).joinpath(*RUN_FOLDER) if run is not None else None
    for given, name in ((metadata, METADATA_CSV), (image_embeddings, IMAGE_CSV), (dna_embeddings, DNA_CSV)):
        path = Path(given) if given is not None else folder / name
        if not path.is_file():
            hint = (
                f"export them with `bioclip embed --run {run} --format bzsl-csv`"
                if given is None
                else "check the path; `bioclip download insect` fetches the INSECT metadata"
            )
            raise DataError(path, f"{path} does not exist", hint)
        paths.append(path)
    return paths[0], paths[1], paths[2]


def _check_inputs(
    table: InsectTable, image: np.ndarray, dna: np.ndarray, paths: tuple[Path, Path, Path], needed: list[str]
) -> None:
    metadata, image_path, dna_path = paths
    if len(image) != len(table):
        raise DataError(
            image_path,
            f"{image_path} has {len(image):,} columns (images) but {metadata} has {len(table):,} rows",
            "the image embeddings must be the metadata's rows in order; export both from the same run",
        )
    if len(dna) < table.n_classes:
        raise DataError(
            dna_path,
            f"{dna_path} has {len(dna):,} columns (classes) but the labels go up to {table.n_classes - 1}",
            "the DNA file holds one column per class 0..C-1",
        )
    for split in needed:
        if not table.loc(split).size:
            raise DataError(metadata, f"{metadata} has no {split} rows", "BZSL needs the INSECT splits (val: tuning)")


def _check_options(params: BzslParams | None, pca_dim: int, features: int, fit_on: str, covariance: str) -> None:
    if not 1 <= pca_dim <= features:
        raise ConfigError("pca_dim", f"--pca-dim {pca_dim} must be between 1 and the feature width {features}",
                          f"e.g. --pca-dim {min(500, features)}")  # fmt: skip
    if fit_on not in FIT_ON:
        raise ConfigError("fit_on", f"--fit-on {fit_on!r} is not one of {', '.join(FIT_ON)}")
    if covariance not in COVARIANCES:
        raise ConfigError("covariance", f"--covariance {covariance!r} is not one of {', '.join(COVARIANCES)}")
    if params is None:
        return
    if params.K < 1:
        raise ConfigError("K", f"--K {params.K} must be at least 1", "e.g. --K 3")
    if min(params.k0, params.k1, params.s) <= 0:
        raise ConfigError("k0", "--k0, --k1 and --s must be positive", "e.g. --k0 0.1 --k1 10 --s 10")
    if params.m <= pca_dim + 1:
        raise ConfigError("m", f"--m {params.m:g} must exceed --pca-dim + 1 = {pca_dim + 1} (the prior's degrees "
                          "of freedom)", f"e.g. --m {5 * pca_dim}")  # fmt: skip


def run_zsl(
    run: Path | None = None,
    metadata: Path | None = None,
    image_embeddings: Path | None = None,
    dna_embeddings: Path | None = None,
    *,
    tune: bool = True,
    params: BzslParams | None = None,
    fit_on: str = "train",
    pca_dim: int = 500,
    covariance: str = "compat",
    genus: bool = False,
) -> ZslOutcome:
    """Read the inputs, run BZSL (tuned or with `params`, INSECT defaults when None) and save a run's results."""
    paths = zsl_input_paths(run, metadata, image_embeddings, dna_embeddings)
    table = read_insect_metadata(paths[0])
    image = read_image_embeddings(paths[1])
    dna = read_dna_class_embeddings(paths[2])
    if params is None and not tune:
        params = insect_defaults(pca_dim)
    _check_options(None if tune else params, pca_dim, image.shape[1], fit_on, covariance)
    needed = (["train", "val"] if tune else []) + [fit_on, "test_seen", "test_unseen"]
    _check_inputs(table, image, dna, paths, sorted(set(needed), key=needed.index))
    genus_of_class = None
    if genus:
        species = [""] * len(dna)
        for label, name in zip(table.labels, table.species):
            species[label] = name
        genus_of_class = genus_ids(species)
    locs = {split: table.loc(split) for split in ("train", "val", "trainval", "test_seen", "test_unseen")}
    try:
        result = run_bzsl(
            image, table.labels, dna, locs, tune=tune, params=params, fit_on=fit_on, pca_dim=pca_dim,
            covariance=covariance, genus_of_class=genus_of_class,
        )  # fmt: skip
    except ValueError as exc:  # e.g. K above the number of seen classes, a class without covariance
        raise DataError(
            paths[0], f"BZSL cannot run on these inputs: {exc}", "check the splits and the options"
        ) from None
    saved = None
    if run is not None:
        saved = Path(run) / "results" / "zsl.json"
        write_text(saved, json.dumps(result.to_json(details=True), indent=2) + "\n")
    return ZslOutcome(result, paths[0], paths[1], paths[2], saved)
