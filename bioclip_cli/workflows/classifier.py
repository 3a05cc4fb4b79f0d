"""`bioclip finetune-classifier`: a species classifier over a trained model's encoders, with its own checkpoints.

The original's supervised baseline (and the classifier of its hybrid method two): the trained image encoder
(optionally the DNA encoder too, loss = the sum of the two cross-entropies) with a linear head over the seen
training species (:class:`~bioclip_cli.models.classifier.SpeciesClassifier`), AdamW (lr 1e-3, torch's
default weight decay), cross-entropy, batch 200, every encoder parameter trained (`freeze_encoders=True`:
a linear probe, only the heads train).

Training rows: the group `train_seen` when the HDF5 has it (BIOSCAN-1M), else `seen_keys` (BIOSCAN-5M and
the bundled sample: the train split); `trainval` for INSECT (`data.dataset: insect`; its validation groups
are the test groups, as in the original, which reports test_seen); or the group asked for. Rows without a
species are left out. Classes
are the sorted distinct species. Each epoch visits the rows in a new order from (seed, epoch) with the
training augmentation (:class:`~bioclip_cli.data.sampler.EpochSampler`, :class:`~bioclip_cli.data.datasets.TrainDataset`;
the last incomplete batch is dropped), then measures top-1 accuracy of the image head (the DNA head when
there is no image head) on the validation seen group.

Everything goes to `RUN/classifier/` (a run-directory layout of its own): `checkpoints/last`,
`checkpoints/best` (best validation top-1), `checkpoints/resume` (Accelerate's full state + progress,
written at every epoch's end), `metrics.jsonl` and `settings.json`. A first Ctrl-C stops after the current
step, saves the resumable state there and raises :class:`~bioclip_cli.errors.Interrupted` (as `bioclip train`).
`resume=True` continues from the saved state (an epoch's end, or the step a Ctrl-C stopped at): 1 epoch + a
resumed second, or a run stopped mid-epoch and resumed, end with the same weights as 2 epochs in one go, bit for
bit, on the same device and intra-op thread count (CPU kernels split their sums by thread, so a run on 1 thread
and one on 2 differ in the last bits).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bioclip_cli.atomic_write import write_text
from bioclip_cli.config import load_config, save_config
from bioclip_cli.config.schema import LEVELS, RunConfig
from bioclip_cli.data.taxonomy import NOT_CLASSIFIED
from bioclip_cli.errors import BioclipError, ConfigError, DataError, Interrupted
from bioclip_cli.runs.run_dir import RunDir, resolve_run, run_checkpoint
from bioclip_cli.runs.train_state import (
    PROGRESS_FILE,
    MetricsLog,
    StopRequest,
    TrainProgress,
    any_process,
    save_training_state,
)

CLASSIFIER_DIR = "classifier"
SETTINGS_FILE = "settings.json"
DEFAULT_GROUPS = ("train_seen", "seen_keys")  # 1M, then 5M / the sample
INSECT_GROUP = "trainval"  # INSECT (data.dataset: insect): the original's supervised baselines train on trainval_loc
# settings a resume must keep (epochs may grow)
FIXED_SETTINGS = ("modalities", "lr", "batch_size", "group", "freeze_encoders", "seed", "checkpoint")


def classifier_run(run_root: str | Path) -> RunDir:
    """`RUN/classifier/`, laid out as a run directory (checkpoints/last, best, resume; metrics.jsonl)."""
    return RunDir(Path(run_root) / CLASSIFIER_DIR)


@dataclass
class ClassifierPlan:
    cfg: RunConfig
    checkpoint: Path | None
    out: Path  # the run directory that receives classifier/
    description: str


def plan_classifier(
    *, run: str | Path | None = None, checkpoint: str | Path | None = None, preset: str | None = None,
    out: str | Path | None = None, which: str = "best",
) -> ClassifierPlan:  # fmt: skip
    """`--run R` (its config and checkpoint), or `--checkpoint C --preset P --out DIR`."""
    if run is not None:
        if checkpoint is not None or preset is not None:
            raise BioclipError("--run takes the model from the run; do not combine it with --checkpoint/--preset",
                               "use --run runs/NAME alone, or --checkpoint FILE --preset NAME --out DIR")  # fmt: skip
        rd = resolve_run(run)
        ckpt = run_checkpoint(rd, which)
        return ClassifierPlan(load_config(str(rd.config)), ckpt, Path(out) if out else rd.root, f"{rd.root} ({which})")
    if checkpoint is None or preset is None or out is None:
        raise BioclipError(
            "nothing to fine-tune: give --run runs/NAME, or --checkpoint FILE --preset NAME --out DIR",
            "bioclip finetune-classifier --run runs/demo",
        )
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise DataError(checkpoint, f"checkpoint {checkpoint} does not exist", "check the path")
    return ClassifierPlan(load_config(preset), checkpoint, Path(out), f"{checkpoint} ({preset})")


def training_group(h5, requested: str | None, dataset: str = "5m") -> str:
    """The group to train on: `requested`; for INSECT `trainval`; else the first of DEFAULT_GROUPS the file has."""
    if requested is None and dataset == "insect":
        requested = INSECT_GROUP
    if requested is not None:
        h5.group(requested)  # DataError naming the groups that exist
        return requested
    for name in DEFAULT_GROUPS:
        if h5.has_group(name):
            return name
    raise DataError(h5.path, f"{h5.path} has none of the groups {', '.join(DEFAULT_GROUPS)} to train a classifier on",
                    "name one with --group")  # fmt: skip


def species_classes(taxonomy: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, dict[str, list[str]]]:
    """`(classes, class_of_row, class_taxonomy)`: sorted distinct species (not_classified left out), each row's
    class (-1: left out), and each class's order/family/genus/species (from its first row)."""
    species = np.asarray(taxonomy["species"]).astype(str)
    keep = species != NOT_CLASSIFIED
    classes, first = np.unique(species[keep], return_index=True)
    rows = np.flatnonzero(keep)
    class_of_row = np.full(len(species), -1, dtype=np.int64)
    class_of_row[rows] = np.searchsorted(classes, species[rows])
    class_tax = {lv: np.asarray(taxonomy[lv]).astype(str)[rows[first]].tolist() for lv in LEVELS}
    return classes, class_of_row, class_tax


class _Rows:
    """A batch sampler giving the group rows at the positions another batch sampler yields."""

    def __init__(self, sampler, rows: np.ndarray):
        self.sampler, self.rows = sampler, rows

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for batch in self.sampler:
            yield self.rows[batch].tolist()


@dataclass
class ClassifierResult:
    out: Path
    group: str
    n_classes: int
    n_rows: int
    epochs: int
    steps: int
    stopped: str  # "finished" or "already complete"
    epoch_losses: list[float] = field(default_factory=list)  # mean training loss of each epoch run by this call
    val_top1: list[float] = field(default_factory=list)  # validation seen top-1 after each epoch of this call
    best: dict | None = None
    seconds: float = 0.0
    is_main: bool = True


def _settings(plan: ClassifierPlan, modalities, lr, batch_size, group, freeze, seed) -> dict:
    return {"modalities": list(modalities), "lr": lr, "batch_size": batch_size, "group": group,
            "freeze_encoders": freeze, "seed": seed, "checkpoint": str(plan.checkpoint) if plan.checkpoint else None,
            "source": plan.description}  # fmt: skip


def _check_resume(crun: RunDir, settings: dict, resume: bool) -> None:
    path = crun.root / SETTINGS_FILE
    if not resume:
        if crun.has_checkpoints():
            raise ConfigError("out", f"{crun.root} already holds a classifier; refusing to overwrite it",
                              "continue it with --resume, or delete the folder to start over")  # fmt: skip
        return
    if not crun.has_resume_state() or not path.is_file():
        raise ConfigError("resume", f"nothing to resume in {crun.root}: it has no saved classifier state",
                          "start it without --resume")  # fmt: skip
    saved = json.loads(path.read_text())
    changed = [f"{k}: {saved.get(k)!r} -> {settings[k]!r}" for k in FIXED_SETTINGS if saved.get(k) != settings[k]]
    if changed:
        raise ConfigError("resume", f"the saved classifier in {crun.root} was trained with other settings ({'; '.join(changed)})",
                          "resume with the same options (only --epochs may change)")  # fmt: skip


def _check_options(cfg: RunConfig, modalities, epochs: int, lr: float, batch_size: int) -> list[str]:
    """The heads' modalities in canonical order; ConfigError for options that cannot train."""
    chosen = [m for m in ("image", "dna") if m in modalities]
    unknown = [m for m in modalities if m not in ("image", "dna")]
    missing = [m for m in chosen if m not in cfg.model.modalities]
    if not chosen or missing or unknown:
        raise ConfigError("modalities", f"--modalities must name encoders of the model among image, dna "
                          f"(the model has {', '.join(cfg.model.modalities)})", "e.g. --modalities image,dna")  # fmt: skip
    if epochs < 1 or lr <= 0 or batch_size < 1:
        raise ConfigError("classifier", f"--epochs and --batch-size must be >= 1 and --lr > 0 (got {epochs}, "
                          f"{batch_size}, {lr})")  # fmt: skip
    return chosen


def _training_rows(dataset, global_batch: int):
    """`(classes, class_of_row, class_taxonomy, rows)` of the training group (rows: those with a species)."""
    classes, class_of_row, class_tax = species_classes(dataset.reader.taxonomy())
    rows = np.flatnonzero(class_of_row >= 0)
    if len(classes) < 2:
        raise DataError(dataset.h5.path, f"{dataset.group} has {len(classes)} species with a name: nothing to classify")
    if len(rows) < global_batch:
        raise ConfigError("batch_size", f"{dataset.group} has {len(rows)} rows with a species, fewer than one batch "
                          f"of {global_batch}", f"use a smaller --batch-size (e.g. {max(1, len(rows) // 2)})")  # fmt: skip
    return classes, class_of_row, class_tax, rows


def _class_codes(classes: np.ndarray, species) -> np.ndarray:
    """The class index of each species (-1: not a class)."""
    species = np.asarray(species).astype(str)
    pos = np.searchsorted(classes, species).clip(0, len(classes) - 1)
    return np.where(classes[pos] == species, pos, -1)


def _top1(model, dataset, targets: np.ndarray, head: str, **encode) -> float:
    """Top-1 accuracy of one head on a group (rows of other species count as misses)."""
    from bioclip_cli.models.encode import encode_rows

    if not len(targets):
        return 0.0
    logits = np.concatenate([f[head] for _, f in encode_rows(model, dataset, **encode)])
    return float(np.mean(logits.argmax(axis=1) == targets))


def finetune_classifier(
    plan: ClassifierPlan,
    *,
    modalities: Sequence[str] = ("image",),
    epochs: int = 150,
    lr: float = 1e-3,
    batch_size: int = 200,
    group: str | None = None,
    freeze_encoders: bool = False,
    seed: int | None = None,
    resume: bool = False,
) -> ClassifierResult:
    """Train (or continue) the classifier of `plan` into `plan.out/classifier/` (see the module docstring)."""
    cfg = plan.cfg
    modalities = _check_options(cfg, modalities, epochs, lr, batch_size)
    seed = cfg.train.seed if seed is None else int(seed)

    import torch
    from accelerate.utils import set_seed

    from bioclip_cli.data.datasets import EvalDataset, TrainDataset
    from bioclip_cli.data.hdf5 import BioscanH5
    from bioclip_cli.data.sampler import EpochSampler
    from bioclip_cli.models.classifier import SpeciesClassifier
    from bioclip_cli.models.encode import build_embedding_model
    from bioclip_cli.runs.accelerator import make_accelerator

    with BioscanH5(cfg.data.hdf5) as h5:
        group = training_group(h5, group, cfg.data.dataset)
        h5.group(cfg.data.val_groups[0])
    crun = classifier_run(plan.out)
    settings = _settings(plan, modalities, lr, batch_size, group, freeze_encoders, seed)
    _check_resume(crun, settings, resume)

    accelerator = make_accelerator()
    main, world, device = accelerator.is_main_process, accelerator.num_processes, accelerator.device
    dataset = TrainDataset(cfg.data.hdf5, group, cfg.data, modalities=modalities, seed=seed,
                           tokenizer=cfg.model.text.tokenizer)  # fmt: skip
    classes, class_of_row, class_tax, rows = _training_rows(dataset, batch_size * world)
    sampler = EpochSampler(len(rows), batch_size, seed=seed, rank=accelerator.process_index, world=world)
    progress = TrainProgress(total_steps=sampler.batches_per_epoch * epochs, world=world)
    if resume:
        progress = TrainProgress.read(crun.resume_state / PROGRESS_FILE)
        if progress.epoch >= epochs:
            return ClassifierResult(crun.root, group, len(classes), len(rows), progress.epoch, progress.step,
                                    "already complete", is_main=main)  # fmt: skip
    if main:
        crun.root.mkdir(parents=True, exist_ok=True)
        write_text(crun.root / SETTINGS_FILE, json.dumps(settings, indent=2) + "\n")
        if not crun.config.is_file():
            save_config(cfg, crun.config)
    metrics = MetricsLog(crun.metrics, main, fresh=not resume, keep_until_step=progress.step if resume else None)

    set_seed(seed)
    clip = build_embedding_model(cfg, plan.checkpoint)
    set_seed(seed)  # the heads' initial weights depend only on the seed
    model = SpeciesClassifier(clip, classes, class_tax, modalities)
    optimizer = torch.optim.AdamW(model.parameters_to_train(freeze_encoders), lr=lr)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw = accelerator.unwrap_model(model)
    if resume:
        accelerator.load_state(str(crun.resume_state))
    targets = torch.from_numpy(class_of_row)
    val = EvalDataset(cfg.data.hdf5, cfg.data.val_groups[0], cfg.data, modalities=modalities,
                      tokenizer=cfg.model.text.tokenizer)  # fmt: skip
    val_targets = _class_codes(classes, val.labels["species"])
    scored = "image" if "image" in modalities else "dna"
    ce = torch.nn.CrossEntropyLoss()
    result = ClassifierResult(crun.root, group, len(classes), len(rows), progress.epoch, progress.step, "finished",
                              is_main=main)  # fmt: skip
    start, before = time.perf_counter(), progress.seconds
    with StopRequest() as stop:
        while progress.epoch < epochs:
            epoch = progress.epoch
            losses, interrupted = _train_epoch(
                model, optimizer, accelerator, dataset, sampler, rows, targets, progress, metrics, stop,
                cfg=cfg, seed=seed, epochs=epochs, batch_size=batch_size, ce=ce,
            )  # fmt: skip
            progress.seconds = before + time.perf_counter() - start
            if interrupted and progress.batch < sampler.batches_per_epoch:
                save_training_state(accelerator, crun, progress, main)
                raise Interrupted(
                    f"stopped the classifier at step {progress.step} (epoch {epoch + 1}, batch {progress.batch} of "
                    f"{sampler.batches_per_epoch}); saved a resumable state in {crun.resume_state}",
                    "continue with the same options and --resume",
                )
            progress.epoch, progress.batch = progress.epoch + 1, 0
            _end_epoch(raw, val, val_targets, scored, progress, losses, metrics, result, crun, settings,
                       cfg=cfg, device=device, accelerator=accelerator, main=main)  # fmt: skip
            save_training_state(accelerator, crun, progress, main)
            if progress.epoch < epochs and any_process(accelerator, stop.requested):
                raise Interrupted(
                    f"stopped the classifier after epoch {progress.epoch} (step {progress.step}); saved a "
                    f"resumable state in {crun.resume_state}",
                    "continue with the same options and --resume",
                )
    accelerator.wait_for_everyone()
    result.epochs, result.steps, result.seconds = progress.epoch, progress.step, progress.seconds
    result.best = {"val_seen_top1": progress.best_value, "epoch": progress.best_epoch, "head": scored}
    return result


def _logged_losses(path: Path, epoch: int, until_step: int) -> list[float]:
    """The losses of epoch `epoch`'s steps up to `until_step` in a metrics log (those before an interruption)."""
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [r["loss"] for r in records
            if r.get("type") == "train" and epoch < r["epoch"] <= epoch + 1 and r["step"] <= until_step]  # fmt: skip


def _train_epoch(model, optimizer, accelerator, dataset, sampler, rows, targets, progress, metrics, stop, *,
                 cfg, seed, epochs, batch_size, ce):  # fmt: skip
    """Train the rest of epoch `progress.epoch` (from batch `progress.batch`); `(losses, interrupted)`:
    the losses of this epoch's steps (those before a resume included, read back from the metrics log) and
    whether a Ctrl-C stopped it after a step."""
    import torch

    from bioclip_cli.data.datasets import batch_to_device, collate
    from bioclip_cli.models.encode import ignore_sigint
    from bioclip_cli.progress import progress_bar

    raw, device, world = accelerator.unwrap_model(model), accelerator.device, accelerator.num_processes
    epoch = progress.epoch
    sampler.set_epoch(epoch, start=progress.batch)
    dataset.set_epoch(epoch)
    workers = cfg.data.num_workers
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=_Rows(sampler, rows), collate_fn=collate,
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         worker_init_fn=ignore_sigint if workers else None,
                                         generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))  # fmt: skip
    model.train()
    losses = _logged_losses(metrics.path, epoch, progress.step) if progress.batch else []
    with progress_bar(sampler.batches_per_epoch, f"classifier epoch {epoch + 1}/{epochs}", unit="steps") as bar:
        bar.update(completed=progress.batch)
        for batch in loader:
            y = targets[batch["index"]].to(device)
            logits = model(batch_to_device(batch, device, cfg.data.image))
            loss = sum(ce(logits[m], y) for m in raw.modalities)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            value = accelerator.reduce(loss.detach().float(), reduction="mean").item()
            if not np.isfinite(value):
                raise BioclipError(f"the classifier's loss became {value} at step {progress.step + 1}",
                                   "lower --lr, then resume from the last epoch with --resume")  # fmt: skip
            losses.append(value)
            progress.step += 1
            progress.batch += 1
            progress.samples += batch_size * world
            metrics.write({"type": "train", "epoch": epoch + progress.batch / sampler.batches_per_epoch,
                           "step": progress.step, "loss": value})  # fmt: skip
            bar.advance(1)
            bar.update(loss=f"{value:.4f}")
            if any_process(accelerator, stop.requested):
                return losses, True
    return losses, False


def _end_epoch(raw, val, val_targets, scored, progress, losses, metrics, result, crun, settings, *, cfg, device,
               accelerator, main):  # fmt: skip
    """Validation top-1 after an epoch, its metrics line, and the last/best checkpoints."""
    from bioclip_cli.models.classifier import save_classifier

    top1 = _top1(raw, val, val_targets, scored, device=device, batch_size=cfg.eval.batch_size,
                 accelerator=accelerator)  # fmt: skip
    is_best = progress.best_value is None or top1 > progress.best_value
    if is_best:
        progress.best_value, progress.best_epoch, progress.best_step = top1, progress.epoch, progress.step
    record = {"type": "eval", "epoch": progress.epoch, "step": progress.step, "loss": float(np.mean(losses)),
              f"val_seen_top1_{scored}": top1, "is_best": is_best}  # fmt: skip
    metrics.write(record)
    result.epoch_losses.append(record["loss"])
    result.val_top1.append(top1)
    if main:
        meta = {"epoch": progress.epoch, "step": progress.step, "val_seen_top1": top1, "scored_head": scored,
                **settings}  # fmt: skip
        save_classifier(raw, crun.last, config=cfg, meta=meta)
        if is_best:
            save_classifier(raw, crun.best, config=cfg, meta=meta)
