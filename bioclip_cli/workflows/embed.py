"""`bioclip embed`: encode the query groups and the keys with a model; write the published embedding files.

The model comes from a run directory (`checkpoints/best` by default), a checkpoint file or folder with a
preset (ours, or a published BIOSCAN-CLIP / CLIBD `.pth`), or a preset alone (pretrained encoders with
seeded random heads: the untrained `none-*` baselines). For `--split val` the groups are
`data.val_groups` (seen, unseen) and `data.key_group`; for `--split test` `data.test_groups`.

Encoding runs under `torch.inference_mode` (optionally in bf16 autocast), batch by batch, with the LoRA
updates folded into the base weights (`eval.merge_lora`, on by default: faster, and equal to the unmerged
model within float rounding; :meth:`~bioclip_cli.models.clip.BioClipModel.lora_merged`); with several
processes (`accelerate launch`) every process encodes a shard of each group and the rows are gathered back
in file order (:func:`bioclip_cli.data.sampler.shard_rows`). The main process streams them into
`extracted_feature_from_{split}_split.hdf5` + `labels_{split}.json` under `OUT/embeddings/`.

`OUT/embeddings/embed_{split}.json` records where the embeddings came from (a fingerprint of the weights,
the configuration and the dtype). A rerun with the same fingerprint skips the groups that are already
complete (all of them once the file is finished); a different source starts the file over.

For an INSECT build, :func:`embed_insect` writes instead every row's image embedding and each species' mean DNA
embedding (and the CSV files BZSL reads), for `bioclip zsl`.

The encoding engine lives in :mod:`bioclip_cli.models.encode` (shared with `predict` and training).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bioclip_cli.atomic_write import check_free_space, write_text
from bioclip_cli.config import load_config, save_config, to_dict
from bioclip_cli.config.schema import RunConfig
from bioclip_cli.data.datasets import EvalDataset
from bioclip_cli.data.embedding_file import EmbeddingFileWriter, embedding_file_paths, estimated_bytes
from bioclip_cli.data.hdf5 import BioscanH5
from bioclip_cli.errors import BioclipError, ConfigError, DataError
from bioclip_cli.models.device import resolve_device
from bioclip_cli.models.encode import build_embedding_model, encode_rows, encode_specimens, lora_merged_if
from bioclip_cli.progress import Bar, progress_bar
from bioclip_cli.run_lock import run_lock
from bioclip_cli.runs.run_dir import RunDir, default_run_dir, resolve_run, run_checkpoint

ROLES: tuple[str, ...] = ("seen", "unseen", "key")
SPLITS = ("val", "test")
DTYPES = ("float32", "float64")


def split_groups(cfg: RunConfig, split: str) -> dict[str, str]:
    """{seen, unseen, key} -> HDF5 group names for a query split (val or test)."""
    if split not in SPLITS:
        raise ConfigError("split", f"--split must be val or test, got {split!r}")
    seen, unseen = cfg.data.val_groups if split == "val" else cfg.data.test_groups
    return {"seen": seen, "unseen": unseen, "key": cfg.data.key_group}


# -------------------------------------------------------------------------------------------- sources


@dataclass
class EmbedPlan:
    """What to embed with which weights, and where the files go (`out/embeddings/`)."""

    cfg: RunConfig
    checkpoint: Path | None
    out: Path
    source: str  # "run", "checkpoint" or "preset"
    description: str


def plan_embedding(
    *,
    run: str | Path | None = None,
    checkpoint: str | Path | None = None,
    preset: str | None = None,
    files: list | tuple = (),
    sets: list | tuple = (),
    which: str = "best",
    out: str | Path | None = None,
) -> EmbedPlan:
    """Resolve `--run` / `--checkpoint [--preset]` / `--preset` into a configuration, weights and an output run."""
    from bioclip_cli.models.checkpoint import CONFIG_FILE

    files, sets = list(files or ()), list(sets or ())
    if run is not None:
        if checkpoint is not None or preset is not None:
            raise BioclipError(
                "--run takes the configuration and weights from the run; do not combine it with --checkpoint/--preset",
                "use --run runs/NAME alone, or --checkpoint FILE --preset NAME",
            )
        rd = resolve_run(run)
        ckpt = run_checkpoint(rd, which)
        cfg = load_config(str(rd.config), files, sets)
        return EmbedPlan(cfg, ckpt, Path(out) if out else rd.root, "run", f"{rd.root} ({which} checkpoint)")
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if not checkpoint.exists():
            raise DataError(
                checkpoint,
                f"checkpoint {checkpoint} does not exist",
                "check the path, or `bioclip download checkpoints`",
            )
        beside = (checkpoint if checkpoint.is_dir() else checkpoint.parent) / CONFIG_FILE
        if preset is None and not (beside.is_file() and checkpoint.suffix in ("", ".safetensors")):
            raise ConfigError(
                "preset",
                f"--checkpoint {checkpoint} needs --preset to say which model it holds",
                f"e.g. bioclip embed --checkpoint {checkpoint} --preset idt-5m",
            )
        cfg = load_config(preset if preset is not None else str(beside), files, sets)
        stem = (
            checkpoint.stem
            if checkpoint.name not in ("best", "last")
            else f"{checkpoint.parent.parent.name}-{checkpoint.name}"
        )
        target = Path(out) if out else default_run_dir(f"{cfg.name}-{stem}")
        return EmbedPlan(cfg, checkpoint, target, "checkpoint", f"{checkpoint} ({cfg.name} model)")
    if preset is not None:
        cfg = load_config(preset, files, sets)
        target = Path(out) if out else default_run_dir(cfg.name)
        if out is None and RunDir(target).has_checkpoints():
            raise BioclipError(
                f"{target} holds a trained run; --preset {preset} alone would embed the untrained model into it",
                f"embed the trained model with `bioclip embed --run {target}`, or pass --out for the baseline",
            )
        what = "untrained baseline" if not cfg.train.enabled else "untrained model"
        return EmbedPlan(cfg, None, target, "preset", f"preset {cfg.name} ({what}: pretrained encoders, seeded heads)")
    raise BioclipError(
        "nothing to embed: give --run runs/NAME, --checkpoint FILE --preset NAME, or --preset NAME",
        "bioclip embed --run runs/demo",
    )


# ------------------------------------------------------------------------------------------- workflow


@dataclass
class EmbedResult:
    h5_path: Path
    labels_path: Path
    out: Path
    split: str
    groups: dict[str, str]
    rows: dict[str, int]
    encoded: list[str] = field(default_factory=list)  # roles encoded by this call
    skipped: list[str] = field(default_factory=list)  # roles already complete from an earlier call
    seconds: float = 0.0  # encoding and writing (the model build excluded)
    description: str = ""
    is_main: bool = True  # False on the other processes of a multi-process launch

    @property
    def rows_per_second(self) -> float:
        done = sum(self.rows[r] for r in self.encoded)
        return done / self.seconds if self.seconds > 0 else 0.0


def _weights_stamp(path: Path | None) -> dict | None:
    if path is None:
        return None
    target = path / "model.safetensors" if path.is_dir() else path
    st = target.stat()
    return {"path": str(target.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def embedding_fingerprint(cfg: RunConfig, checkpoint: Path | None, split: str, dtype: str) -> str:
    """A hash of everything that decides the embedding values: weights, model, data preparation, dtype."""
    data = {k: v for k, v in to_dict(cfg.data).items() if k != "num_workers"}
    payload = {
        "weights": _weights_stamp(checkpoint),
        "model": to_dict(cfg.model),
        "data": data,
        "autocast": cfg.eval.autocast,
        "split": split,
        "dtype": dtype,
    }
    if any(getattr(cfg.model, m).finetune == "lora" for m in cfg.model.modalities):
        payload["merge_lora"] = cfg.eval.merge_lora  # rounding differs; without LoRA merging changes nothing
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _write_info(path: Path, info: dict) -> None:
    write_text(path, json.dumps(info, indent=2) + "\n")


def embed(
    plan: EmbedPlan, *, split: str = "val", dtype: str | None = None, batch_size: int | None = None
) -> EmbedResult:
    """Encode the `split` queries and the keys with the plan's model; write the published files under
    `plan.out/embeddings/`. Run it under `accelerate launch` to encode with several processes.

    The output run directory is held exclusively meanwhile (:func:`bioclip_cli.run_lock.run_lock`)."""
    with run_lock(plan.out, "bioclip embed", on_takeover=_note):
        return _embed_locked(plan, split=split, dtype=dtype, batch_size=batch_size)


def _note(text: str) -> None:
    print(f"Note: {text}", file=sys.stderr)


def _embed_locked(plan: EmbedPlan, *, split: str, dtype: str | None, batch_size: int | None) -> EmbedResult:
    cfg = plan.cfg
    dtype = dtype or cfg.eval.dtype
    if dtype not in DTYPES:
        raise ConfigError("dtype", f"--dtype must be float32 or float64, got {dtype!r}")
    groups = split_groups(cfg, split)
    h5 = BioscanH5(cfg.data.hdf5)  # DataError naming the file (+ how to get it)
    for group in groups.values():
        h5.group(group)  # DataError naming the group and the groups that exist
    h5.close()

    from accelerate.utils import broadcast_object_list

    from bioclip_cli.runs.accelerator import make_accelerator

    accelerator = make_accelerator()
    main = accelerator.is_main_process
    out_dir = RunDir(plan.out).embeddings
    h5_path, labels_path = embedding_file_paths(out_dir, split)
    info_path = out_dir / f"embed_{split}.json"
    fingerprint = embedding_fingerprint(cfg, plan.checkpoint, split, dtype)
    writer = None
    state = [set(), False]
    if main:
        previous = json.loads(info_path.read_text()) if info_path.is_file() else {}
        same = previous.get("fingerprint") == fingerprint
        writer = EmbeddingFileWriter(out_dir, split, dtype=dtype, overwrite=not same)
        state = [writer.completed_groups, writer.finished]
        if not RunDir(plan.out).config.is_file():
            save_config(cfg, RunDir(plan.out).config)
        info = {"fingerprint": fingerprint, "source": plan.source, "description": plan.description,
                "checkpoint": str(plan.checkpoint) if plan.checkpoint else None, "split": split, "dtype": dtype,
                "groups": groups, "complete": writer.finished}  # fmt: skip
        _write_info(info_path, info)
    if accelerator.num_processes > 1:
        broadcast_object_list(state)
    done, finished = state
    result = EmbedResult(h5_path, labels_path, plan.out, split, groups, {}, description=plan.description, is_main=main)
    datasets = {
        role: EvalDataset(cfg.data.hdf5, group, cfg.data, modalities=cfg.model.modalities,
                          tokenizer=cfg.model.text.tokenizer)
        for role, group in groups.items()
    }  # fmt: skip
    result.rows = {role: len(ds) for role, ds in datasets.items()}
    todo = [role for role in ROLES if role not in done]
    result.skipped = [role for role in ROLES if role in done]
    if finished or not todo:
        if writer is not None:
            writer.finalize()
            writer.close()
            if not info["complete"]:
                info["complete"] = True
                _write_info(info_path, info)
        return result

    needed = estimated_bytes({r: result.rows[r] for r in todo}, dict.fromkeys(cfg.model.modalities, cfg.model.output_dim),
                             dtype)  # fmt: skip
    if main:  # refuse before encoding anything, not after hours of it
        check_free_space(out_dir, h5_path, needed)
    model = build_embedding_model(cfg, plan.checkpoint).to(accelerator.device)
    start = time.perf_counter()
    batch = batch_size or cfg.eval.batch_size
    try:
        with lora_merged_if(model, cfg.eval.merge_lora):  # once around all groups
            for role in todo:
                ds = datasets[role]
                bar_ctx = progress_bar(len(ds), f"Embedding {ds.group}", unit="rows") if main else nullcontext(Bar())
                with bar_ctx as bar:
                    labels = ds.labels if main else None
                    ids = ds.sample_ids if main else None
                    group_writer = writer.group_writer(role, len(ds)) if main else None
                    for first, feats in encode_rows(
                        model, ds, device=accelerator.device, batch_size=batch, num_workers=cfg.data.num_workers,
                        autocast=cfg.eval.autocast, accelerator=accelerator, bar=bar,
                    ):  # fmt: skip
                        if group_writer is not None:
                            rows = slice(first, first + len(next(iter(feats.values()))))
                            group_writer.append(feats, {lv: v[rows] for lv, v in labels.items()}, ids[rows])
                    if group_writer is not None:
                        group_writer.close()
                result.encoded.append(role)
        if main:
            writer.finalize()
            info["complete"] = True
            _write_info(info_path, info)
    except OSError as exc:  # e.g. the disk filled up: no half-written file is left, one sentence
        if writer is not None:
            raise writer.discard(exc, needed) from None
        raise
    finally:
        if writer is not None:
            try:
                writer.close()  # flushes: on a full disk this is where h5py fails
            except OSError as exc:
                raise writer.discard(exc, needed) from None
    accelerator.wait_for_everyone()
    result.seconds = time.perf_counter() - start
    return result


# ------------------------------------------------------------------------------- a user's specimens

SPECIMEN_FORMATS = ("hdf5", "npy", "parquet")


@dataclass
class SpecimenEmbedResult:
    out: Path
    format: str
    rows: int
    features: dict[str, int]  # feature -> rows that have it
    failed: list[tuple[str, str]]  # (id, why) of specimens that could not be embedded
    problems: list[tuple[str, str, str]]  # (kind, id, detail) of manifest rows left out
    model_fingerprint: str
    seconds: float = 0.0


def embed_specimens(
    plan: EmbedPlan,
    specimens: list,
    out: str | Path,
    *,
    fmt: str = "hdf5",
    kind: str = "embeddings",
    problems: list | None = None,
    batch_size: int | None = None,
    device: str | None = None,
) -> SpecimenEmbedResult:
    """Embed a user's specimens (:mod:`bioclip_cli.data.specimen_inputs`) with the plan's model and write them
    with their ids and taxonomy: our specimen HDF5 (`kind="library"` makes it a reference library), or
    `fmt="npy"` (a numpy .npz archive) / `"parquet"`. A specimen that cannot be embedded is reported, not fatal."""
    from bioclip_cli.data.specimen_file import (
        SpecimenVectors,
        with_average,
        write_npz,
        write_parquet,
        write_specimen_file,
    )  # fmt: skip
    from bioclip_cli.data.taxonomy import LEVELS, NOT_CLASSIFIED
    from bioclip_cli.models.fingerprint import checkpoint_sha256, model_fingerprint

    if fmt not in SPECIMEN_FORMATS:
        raise BioclipError(
            f"--format {fmt!r} is not a specimen embeddings format", f"use one of: {', '.join(SPECIMEN_FORMATS)}"
        )
    if kind == "library" and fmt != "hdf5":
        raise BioclipError("a reference library is an HDF5 file; --format npy/parquet are for exports")
    if not specimens:
        raise BioclipError("no usable specimen to embed", "check the problems listed for your inputs")
    cfg = plan.cfg
    start = time.perf_counter()
    sha = checkpoint_sha256(plan.checkpoint)
    fingerprint = model_fingerprint(cfg, plan.checkpoint, sha)
    dev = resolve_device(device)
    model = build_embedding_model(cfg, plan.checkpoint).to(dev)
    work = sum((s.image is not None) + (s.barcode is not None) for s in specimens)
    with progress_bar(work, "Embedding specimens", unit="inputs") as bar:
        feats, failed = encode_specimens(
            model, specimens, image_cfg=cfg.data.image, dna_cfg=cfg.data.dna, device=dev,
            batch_size=batch_size or cfg.eval.batch_size, merge_lora=cfg.eval.merge_lora, bar=bar,
        )  # fmt: skip
    keep = [i for i in range(len(specimens)) if i not in failed]
    if not keep:
        raise BioclipError(
            f"none of the {len(specimens)} specimens could be embedded (first: {next(iter(failed.values()))})"
        )
    position = {i: r for r, i in enumerate(keep)}
    features = {}
    for modality, vectors in feats.items():
        if vectors:
            width = len(next(iter(vectors.values())))
            rows = np.zeros(len(keep), dtype=bool)
            array = np.zeros((len(keep), width), dtype=np.float32)
            for i, v in vectors.items():
                rows[position[i]] = True
                array[position[i]] = v
            features[modality] = (rows, array)
    chosen = [specimens[i] for i in keep]
    taxonomy = {lv: [s.taxonomy.get(lv, NOT_CLASSIFIED) for s in chosen] for lv in LEVELS}
    vectors = with_average(
        SpecimenVectors([s.id for s in chosen], taxonomy, features, fingerprint, sha, [plan.description])
    )
    writer = {"hdf5": lambda p, v: write_specimen_file(p, v, kind), "npy": write_npz, "parquet": write_parquet}[fmt]
    path = writer(out, vectors)
    return SpecimenEmbedResult(
        path, fmt, len(keep), {name: int(rows.sum()) for name, (rows, _) in vectors.features.items()},
        [(specimens[i].id, why) for i, why in failed.items()], list(problems or []), fingerprint,
        time.perf_counter() - start,
    )  # fmt: skip


# ------------------------------------------------------------------------- every group, per-split files


@dataclass
class PerSplitResult:
    out: Path
    files: dict[str, int]  # group -> rows


def embed_per_split(
    plan: EmbedPlan, out: str | Path | None = None, *, groups: list[str] | None = None, dtype: str = "float64"
) -> PerSplitResult:
    """Every group of the plan's dataset (or `groups`), one `extracted_features_of_{group}.hdf5` each (the
    original project's per-split layout, :mod:`bioclip_cli.data.per_split_export`), under `out`
    (default: the run's `embeddings/per_split/`)."""
    import h5py

    from bioclip_cli.data.per_split_export import per_split_path, write_per_split_file

    cfg = plan.cfg
    with h5py.File(cfg.data.hdf5, "r") as f:
        names = list(f.keys())
        id_name = "processid" if names and "processid" in f[names[0]] else "file_name"
    unknown = [g for g in groups or [] if g not in names]
    if unknown:
        raise DataError(
            cfg.data.hdf5, f"no group(s) {', '.join(unknown)} in {cfg.data.hdf5}; it has: {', '.join(names)}"
        )
    target = Path(out) if out else RunDir(plan.out).embeddings / "per_split"
    dev = resolve_device(None)
    model = build_embedding_model(cfg, plan.checkpoint).to(dev)
    files = {}
    with lora_merged_if(model, cfg.eval.merge_lora):
        for group in groups or names:
            ds = EvalDataset(cfg.data.hdf5, group, cfg.data, modalities=cfg.model.modalities,
                             tokenizer=cfg.model.text.tokenizer)  # fmt: skip
            with progress_bar(len(ds), f"Embedding {group}", unit="rows") as bar:
                parts: dict[str, list[np.ndarray]] = {}
                for _, feats in encode_rows(model, ds, device=dev, batch_size=cfg.eval.batch_size, bar=bar,
                                            num_workers=cfg.data.num_workers, autocast=cfg.eval.autocast):  # fmt: skip
                    for m, x in feats.items():
                        parts.setdefault(m, []).append(x)
            feats = {m: np.concatenate(xs) for m, xs in parts.items()}
            write_per_split_file(per_split_path(target, group), feats, ds.labels, [str(s) for s in ds.sample_ids],
                                 id_name, dtype)  # fmt: skip
            files[group] = len(ds)
    return PerSplitResult(target, files)


# ------------------------------------------------------------------------------------- INSECT (BZSL)


@dataclass
class InsectEmbedResult:
    files: list[Path]
    rows: int
    classes: int
    group: str
    seconds: float = 0.0
    description: str = ""
    is_main: bool = True


def embed_insect(plan: EmbedPlan, *, bzsl_csv: bool = True, batch_size: int | None = None) -> InsectEmbedResult:
    """Every row of an INSECT build's key group (res101 order) through the image and DNA encoders; writes each
    row's image embedding and each class's mean DNA embedding under `plan.out/embeddings/` (with `bzsl_csv`,
    also the CSV trio BZSL reads, in `embeddings/bzsl/`; :mod:`bioclip_cli.data.insect_embeddings`)."""
    from bioclip_cli.data.insect_embeddings import read_insect_group, write_insect_embeddings
    from bioclip_cli.models.encode import encode_group
    from bioclip_cli.runs.accelerator import make_accelerator

    cfg = plan.cfg
    missing = [m for m in ("image", "dna") if m not in cfg.model.modalities]
    if missing:
        raise ConfigError("model.modalities", f"the BZSL export needs image and DNA embeddings; {cfg.name} has no "
                          f"{' or '.join(missing)} encoder")  # fmt: skip
    group = cfg.data.key_group
    table, rows, n_classes = read_insect_group(cfg.data.hdf5, group)
    accelerator = make_accelerator()
    main = accelerator.is_main_process
    model = build_embedding_model(cfg, plan.checkpoint).to(accelerator.device)
    dataset = EvalDataset(cfg.data.hdf5, group, cfg.data, modalities=["image", "dna"])
    start = time.perf_counter()
    bar_ctx = progress_bar(len(dataset), f"Embedding {group} (INSECT)", unit="rows") if main else nullcontext(Bar())
    with bar_ctx as bar:
        feats = encode_group(model, dataset, merge_lora=cfg.eval.merge_lora, device=accelerator.device,
                             batch_size=batch_size or cfg.eval.batch_size, num_workers=cfg.data.num_workers,
                             autocast=cfg.eval.autocast, accelerator=accelerator, bar=bar)  # fmt: skip
    files: list[Path] = []
    if main:
        out = RunDir(plan.out)
        if not out.config.is_file():
            save_config(cfg, out.config)
        files = write_insect_embeddings(out.embeddings, feats["image"], feats["dna"], table, rows, n_classes,
                                        bzsl_csv=bzsl_csv, source=plan.description)  # fmt: skip
    accelerator.wait_for_everyone()
    return InsectEmbedResult(files, len(table), n_classes, group, time.perf_counter() - start, plan.description, main)
