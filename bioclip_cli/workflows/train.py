"""`bioclip train`: contrastive training with Accelerate, from a laptop CPU to many GPUs.

One call of :func:`train` runs a configuration (a preset, resolved) into a run directory
(:mod:`bioclip_cli.runs.run_dir`). Accelerate places the model, applies mixed precision, accumulates
gradients and wraps the model in DDP (real gradient synchronisation) when launched with several processes
(`accelerate launch -m bioclip_cli train ...` or torchrun). The order of the training rows changes every
epoch from the seed (:mod:`bioclip_cli.data.sampler`); the recipe (v1 Adam + constant lr + local loss, or
v2 AdamW + one-cycle + learned temperature + gathered loss + bf16) comes from the configuration
(:mod:`bioclip_cli.models.optim`).

The phases, each a function with explicit arguments (the shape of litgpt's `finetune/lora.py`):
:func:`setup` (model, optimizer, schedule, data; then :func:`restore` for `--resume`) -> :func:`fit` (the
epoch loop: :func:`train_epoch` -> :func:`optimizer_step` per step) -> :func:`validate` and :func:`save`
after every `eval_every` epochs and at the end.

Validation embeds `all_keys`, `val_seen` and `val_unseen` (:func:`bioclip_cli.models.encode.encode_group`)
and computes the retrieval metrics in memory (:func:`bioclip_cli.retrieval.evaluation.evaluate_arrays`);
`checkpoints/last` (and `checkpoints/best` when `train.best` improved) are written atomically, and so is
the full training state for `--resume` (`checkpoints/resume/`: model, optimizer, schedule, RNG states of
every process, sampler position, step). A run of 2 epochs and a run of 1 epoch resumed for a second end
with identical weights.

Ctrl-C stops at the end of the current step, saves a resumable state and raises
:class:`~bioclip_cli.errors.Interrupted`. A non-finite loss stops before the optimizer step, keeps the
last good checkpoint and raises :class:`TrainingDiverged` naming the step.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioclip_cli.config import load_config, load_run_config, save_config, to_dict
from bioclip_cli.config.schema import MODALITIES, RunConfig
from bioclip_cli.errors import BioclipError, ConfigError, Interrupted
from bioclip_cli.retrieval.eval_result import EvalResult
from bioclip_cli.run_lock import run_lock
from bioclip_cli.runs.accelerator import training_accelerator
from bioclip_cli.runs.resume import (
    NOTHING_TO_RESUME_HINT,
    changed_settings,
    check_data,
    check_init,
    check_run_dir,
    check_trainable,
    flat_settings,
    resumed_progress,
)
from bioclip_cli.runs.run_dir import RunDir, check_run_exists, default_run_dir
from bioclip_cli.runs.train_state import (
    MetricsLog,
    StepStats,
    StopRequest,
    TrainProgress,
    any_process,
    save_training_state,
    weights_digest,
)

if TYPE_CHECKING:
    import torch

    from bioclip_cli.data.datasets import EvalDataset, TrainDataset
    from bioclip_cli.data.sampler import EpochSampler
    from bioclip_cli.progress import Bar


class TrainingDiverged(BioclipError):
    """The loss became NaN or infinite; nothing was saved after the last good checkpoint."""


# ------------------------------------------------------------------------------------ events, result


class TrainEvents:
    """What a run tells its caller as it goes (the command line prints it; a notebook may ignore it)."""

    def message(self, text: str) -> None:  # noqa: B027 - a no-op default on purpose
        pass

    def parameters(self, rows: list[dict]) -> None:  # noqa: B027
        pass

    def evaluated(self, epoch: float, step: int, result: EvalResult, selection: dict) -> None:  # noqa: B027
        pass


@dataclass
class TrainResult:
    run_dir: Path
    epochs: int  # epochs completed
    steps: int
    samples: int
    seconds: float
    stopped: str  # "finished", "max_steps" or "already complete"
    best: dict | None = None  # {"metric", "value", "epoch", "step"}
    last_eval: EvalResult | None = None  # the latest validation
    parameters: list[dict] = field(default_factory=list)
    is_main: bool = True  # False on the other processes of a multi-process launch (they print nothing)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------------------------- checks


def resume_config(run_dir: str | Path, files=(), sets=()) -> RunConfig:
    """The configuration to resume a run with: its saved config.yaml, then `--config` files and `--set`s."""
    run = RunDir(check_run_exists(run_dir, hint=NOTHING_TO_RESUME_HINT))
    if not run.config.is_file():
        raise ConfigError(
            "resume", f"nothing to resume in {run.root}: it has no config.yaml", "start it without --resume"
        )
    return load_config(str(run.config), list(files), list(sets))


# ------------------------------------------------------------------------------------------ the parts


@dataclass
class Schedule:
    """How the training rows become optimizer steps on this launch."""

    sampler: EpochSampler  # this process's batches of every epoch
    steps_per_epoch: int
    total_steps: int  # epochs x steps per epoch, capped by train.max_steps
    global_batch: int  # rows per optimizer step over all processes and accumulated batches

    @property
    def batches_per_epoch(self) -> int:
        return self.sampler.batches_per_epoch


@dataclass
class Trainer:
    """What :func:`setup` builds and the other phases use."""

    accelerator: Any
    model: torch.nn.Module  # prepared by Accelerate (DDP-wrapped when several processes run)
    raw: torch.nn.Module  # the unwrapped BioClipModel
    optimizer: torch.optim.Optimizer
    scheduler: Any
    trainable: list  # parameters that are clipped
    loss_fn: torch.nn.Module
    dataset: TrainDataset
    parameter_rows: list[dict]


@dataclass
class Validation:
    """The in-training evaluation: the query/key groups and what is measured on them."""

    datasets: dict[str, EvalDataset]  # "key", "seen", "unseen"
    queries: list[str]
    keys: list[str]
    ks: list[int]
    levels: list[str]
    autocast: str


@dataclass
class Selection:
    """One validation's verdict, the same on every process: the selection metric and whether it is the best."""

    is_best: bool
    record: dict  # {"metric", "value", "best", "best_epoch", "is_best"}


@dataclass
class _Throughput:
    """Steps and data-loading time since the last logged step."""

    start: float = field(default_factory=time.perf_counter)
    steps: int = 0
    data_s: float = 0.0

    def restart(self, now: float) -> None:
        self.start, self.steps, self.data_s = now, 0, 0.0


@dataclass
class _Saved:
    """Where the last checkpoint and resume state were saved (named when the loss diverges)."""

    epoch: int
    step: int


# --------------------------------------------------------------------------------------------- phases


def plan_schedule(cfg: RunConfig, n_train: int, accelerator) -> Schedule:
    """This process's sampler over `n_train` rows and the step counts of the launch."""
    from bioclip_cli.data.sampler import EpochSampler

    tc, world = cfg.train, accelerator.num_processes
    sampler = EpochSampler(
        n_train, tc.batch_size, seed=tc.seed, rank=accelerator.process_index, world=world, accumulate=tc.grad_accum
    )
    steps_per_epoch = sampler.batches_per_epoch // tc.grad_accum
    total_steps = steps_per_epoch * tc.epochs
    if tc.max_steps is not None:
        total_steps = min(total_steps, tc.max_steps)
    return Schedule(sampler, steps_per_epoch, total_steps, tc.batch_size * world * tc.grad_accum)


def setup(cfg: RunConfig, accelerator, schedule: Schedule) -> Trainer:
    """Seed, build the model, the optimizer and its schedule, prepare them with Accelerate; the training data."""
    from accelerate.utils import set_seed

    from bioclip_cli.data.datasets import TrainDataset
    from bioclip_cli.models.build import build_model
    from bioclip_cli.models.loss import ClipLoss
    from bioclip_cli.models.optim import build_optimizer, build_scheduler, effective_lr
    from bioclip_cli.models.summary import parameter_table

    tc = cfg.train
    set_seed(tc.seed)
    model = build_model(cfg.model)
    if tc.grad_checkpointing:
        model.enable_gradient_checkpointing()
    parameter_rows = parameter_table(model)
    lr = effective_lr(tc, schedule.global_batch)
    optimizer = build_optimizer(model.parameters(), tc, lr)
    scheduler = build_scheduler(optimizer, tc, lr, schedule.total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    raw = accelerator.unwrap_model(model)
    dataset = TrainDataset(
        cfg.data.hdf5, cfg.data.train_group, cfg.data, modalities=cfg.model.modalities,
        tokenizer=cfg.model.text.tokenizer, seed=tc.seed,
    )  # fmt: skip
    return Trainer(accelerator, model, raw, optimizer, scheduler, [p for p in raw.parameters() if p.requires_grad],
                   ClipLoss(gather=tc.loss == "gathered"), dataset, parameter_rows)  # fmt: skip


def plan_validation(cfg: RunConfig, modalities) -> Validation:
    """The groups validation embeds and the features, k and levels it measures (train.best's included)."""
    from bioclip_cli.data.datasets import EvalDataset

    roles = {"key": cfg.data.key_group, "seen": cfg.data.val_groups[0], "unseen": cfg.data.val_groups[1]}
    datasets = {
        role: EvalDataset(cfg.data.hdf5, group, cfg.data, modalities=cfg.model.modalities,
                          tokenizer=cfg.model.text.tokenizer)
        for role, group in roles.items()
    }  # fmt: skip
    best = cfg.train.best
    base = [m for m in MODALITIES if m in modalities]
    queries = base + ([best.query] if best.query not in base else [])
    keys = base + ([best.key] if best.key not in base else [])
    ks = sorted(set(cfg.eval.k) | {best.k})
    levels = list(dict.fromkeys([*cfg.eval.levels, best.level]))
    autocast = "bf16" if cfg.train.precision == "bf16" else cfg.eval.autocast
    return Validation(datasets, queries, keys, ks, levels, autocast)


def restore(accelerator, run: RunDir, changes: list[str]) -> None:
    """Load the saved training state (model, optimizer, schedule, RNG states) into the prepared objects."""
    try:
        accelerator.load_state(str(run.resume_state))
    except (RuntimeError, KeyError, ValueError) as exc:
        changed = f" (changed: {'; '.join(changes)})" if changes else ""
        raise ConfigError(
            "resume",
            f"the saved state in {run.resume_state} does not fit this configuration{changed}: "
            f"{str(exc).splitlines()[0][:200]}",
            "resume with the run's own settings, or start a new run with --out",
        ) from None


def validate(
    cfg: RunConfig, trainer: Trainer, validation: Validation, progress: TrainProgress, epoch: float
) -> tuple[EvalResult | None, Selection]:
    """Embed the validation groups (every process), evaluate them and judge the selection metric (main
    process; the verdict is broadcast). `progress` keeps the best value. The result is None off the main process."""
    from bioclip_cli.models.encode import encode_group
    from bioclip_cli.progress import Bar, progress_bar
    from bioclip_cli.retrieval.evaluation import evaluate_arrays

    accelerator, raw, sets = trainer.accelerator, trainer.raw, validation.datasets
    main = accelerator.is_main_process
    rows = sum(len(ds) for ds in sets.values())
    with progress_bar(rows, "evaluating", unit="rows") if main else nullcontext(Bar()) as bar:
        feats = {
            role: encode_group(raw, ds, device=accelerator.device, batch_size=cfg.eval.batch_size,
                               num_workers=cfg.data.num_workers, autocast=validation.autocast,
                               accelerator=accelerator, bar=bar, merge_lora=cfg.eval.merge_lora)
            for role, ds in sets.items()
        }  # fmt: skip
    raw.train()
    result, selection = None, None
    if main:
        result = evaluate_arrays(
            {"seen": feats["seen"], "unseen": feats["unseen"]}, feats["key"],
            {"seen": sets["seen"].labels, "unseen": sets["unseen"].labels}, sets["key"].labels,
            queries=validation.queries, keys=validation.keys, ks=validation.ks, levels=validation.levels,
            search=cfg.eval.search,
        )  # fmt: skip
        best = cfg.train.best
        value = result.mean_seen_unseen(best.query, best.key, best.average, best.k, best.level)
        is_best = progress.best_value is None or value > progress.best_value
        if is_best:
            progress.best_value, progress.best_epoch, progress.best_step = value, epoch, progress.step
        selection = Selection(is_best, {"metric": best.label, "value": value, "best": progress.best_value,
                                        "best_epoch": progress.best_epoch, "is_best": is_best})  # fmt: skip
    shared = [selection]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(shared)
    return result, shared[0]


def save(cfg: RunConfig, run: RunDir, trainer: Trainer, progress: TrainProgress, selection: Selection | None) -> _Saved:
    """`checkpoints/last` (and `best` when the validation says so) and the resume state; refuses to save
    replicas that differ between processes."""
    from accelerate.utils import gather_object

    from bioclip_cli.models.checkpoint import save_checkpoint

    accelerator, raw = trainer.accelerator, trainer.raw
    world, main = accelerator.num_processes, accelerator.is_main_process
    digests = gather_object([weights_digest(raw)]) if world > 1 else [weights_digest(raw)]
    if len(set(digests)) > 1:
        raise BioclipError(
            f"the model replicas of the {world} processes differ after step {progress.step} (weights sha256: "
            f"{', '.join(d[:12] for d in digests)}); gradients were not synchronised",
            "please report this with the launch command",
        )
    if main:
        meta = {"epoch": progress.epoch, "batch_in_epoch": progress.batch, "step": progress.step,
                "samples": progress.samples, "weights_sha256": digests[0], "replica_weights_sha256": digests,
                "processes": world, "selection": selection.record if selection else None}  # fmt: skip
        save_checkpoint(raw, run.last, config=cfg, meta=meta)
        if selection is not None and selection.is_best:
            save_checkpoint(raw, run.best, config=cfg, meta=meta)
    save_training_state(accelerator, run, progress, main)
    return _Saved(progress.epoch, progress.step)


def diverged(
    run: RunDir, schedule: Schedule, progress: TrainProgress, saved: _Saved | None, loss: float
) -> TrainingDiverged:
    where = f"step {progress.step + 1} (epoch {progress.epoch + 1}, batch {progress.batch + 1} of "
    where += f"{schedule.batches_per_epoch})"
    if saved is None:
        kept = "nothing was saved (no epoch had finished)"
    else:
        kept = f"{run.last} and the resume state from step {saved.step} (epoch {saved.epoch}) are kept unchanged"
    return TrainingDiverged(
        f"the loss became {loss} at {where}; training stopped before that optimizer step; {kept}",
        "lower train.lr, set train.grad_clip (e.g. --set train.grad_clip=1.0) or use --precision fp32, "
        f"then continue with `bioclip train --out {run.root} --resume`",
    )


def optimizer_step(trainer: Trainer, cfg: RunConfig, stats: StepStats, on_diverged) -> None:
    """Clip, step the optimizer and the schedule, zero the gradients; `on_diverged(loss)` (an exception to
    raise) when a micro-batch loss of any process was not finite."""
    if stats.nonfinite > 0:
        raise on_diverged(stats.loss)
    accelerator, optimizer = trainer.accelerator, trainer.optimizer
    if cfg.train.grad_clip is not None:
        accelerator.clip_grad_norm_(trainer.trainable, cfg.train.grad_clip)
    optimizer.step()
    if not accelerator.optimizer_step_was_skipped:
        trainer.scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def log_step(
    cfg: RunConfig, trainer: Trainer, schedule: Schedule, progress: TrainProgress, epoch: int, stats: StepStats,
    throughput: _Throughput, metrics: MetricsLog, bar: Bar,
) -> None:  # fmt: skip
    """One `train` record in metrics.jsonl (and the trackers), and the bar's loss, lr and rows/s."""
    from bioclip_cli.models.optim import current_lr

    now = time.perf_counter()
    steps = throughput.steps
    rate = steps * schedule.global_batch / max(now - throughput.start, 1e-9)
    step_s, data_s = (now - throughput.start) / steps, throughput.data_s / steps
    throughput.restart(now)
    scale = trainer.raw.logit_scale.detach().float().item()
    record = {"type": "train", "epoch": epoch + progress.batch / schedule.batches_per_epoch,
              "step": progress.step, "loss": stats.loss, "lr": current_lr(trainer.optimizer),
              "logit_scale": scale, "samples_per_s": rate, "step_s": step_s, "data_s": data_s}  # fmt: skip
    metrics.write(record)
    if cfg.train.report_to:
        trainer.accelerator.log({"train/loss": stats.loss, "train/lr": record["lr"]}, step=progress.step)
    bar.update(loss=f"{stats.loss:.4f}", lr=f"{record['lr']:.2e}", samples_s=f"{rate:,.0f}")


def train_epoch(
    cfg: RunConfig, run: RunDir, trainer: Trainer, schedule: Schedule, progress: TrainProgress,
    metrics: MetricsLog, stop: StopRequest, saved: _Saved | None,
) -> tuple[bool, int]:  # fmt: skip
    """Train the rest of epoch `progress.epoch` (from `progress.batch`), or up to the last step. Returns
    whether a Ctrl-C (on any process) ended it early, and the rows this process skipped for an unreadable
    image (`data.bad_images: skip`)."""
    import torch

    from bioclip_cli.data.datasets import batch_to_device, collate
    from bioclip_cli.models.encode import ignore_sigint
    from bioclip_cli.models.grad_cache import grad_cache_step
    from bioclip_cli.progress import Bar, progress_bar

    tc, accelerator, model, raw = cfg.train, trainer.accelerator, trainer.model, trainer.raw
    device, workers, epoch = accelerator.device, cfg.data.num_workers, progress.epoch
    schedule.sampler.set_epoch(epoch, start=progress.batch)
    trainer.dataset.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(
        trainer.dataset, batch_sampler=schedule.sampler, collate_fn=collate, num_workers=workers,
        pin_memory=device.type == "cuda", worker_init_fn=ignore_sigint if workers else None,
        generator=torch.Generator().manual_seed(tc.seed * 1_000_003 + epoch),
    )  # fmt: skip
    model.train()
    micro_losses: list = []
    stats: StepStats | None = None
    skipped = 0
    throughput = _Throughput()
    title = f"epoch {epoch + 1}/{tc.epochs}"
    main = accelerator.is_main_process
    with progress_bar(schedule.steps_per_epoch, title, unit="steps") if main else nullcontext(Bar()) as bar:
        bar.update(completed=progress.batch // tc.grad_accum)
        batches = iter(loader)
        while True:
            fetch = time.perf_counter()
            batch = next(batches, None)
            throughput.data_s += time.perf_counter() - fetch
            if batch is None:
                return False, skipped
            skipped += tc.batch_size - len(batch["index"])  # unreadable images (data.bad_images)
            batch = batch_to_device(batch, device, cfg.data.image)  # uint8 images -> float here
            with accelerator.accumulate(model):
                if tc.micro_batch_size:  # gradient caching: the full-batch loss, micro-batch memory
                    loss = grad_cache_step(
                        model, batch, trainer.loss_fn, lambda: raw.logit_scale, tc.micro_batch_size,
                        backward=accelerator.backward, no_sync=lambda: accelerator.no_sync(model),
                    )  # fmt: skip
                else:
                    loss = trainer.loss_fn(model(batch), raw.logit_scale)
                    accelerator.backward(loss)
                micro_losses.append(loss.detach().float())
                synced = accelerator.sync_gradients
                if synced:
                    stats = StepStats.reduce(accelerator, micro_losses, stop.requested)
                    micro_losses = []
                    optimizer_step(trainer, cfg, stats, lambda value: diverged(run, schedule, progress, saved, value))
            progress.batch += 1
            if not synced:
                continue
            progress.step += 1
            progress.samples += schedule.global_batch
            throughput.steps += 1
            bar.advance(1)
            if progress.step % tc.log_every == 0 or progress.step == schedule.total_steps:
                log_step(cfg, trainer, schedule, progress, epoch, stats, throughput, metrics, bar)
            if stats.stop_requested or progress.step >= schedule.total_steps:
                return stats.stop_requested, skipped


def fit(
    cfg: RunConfig, run: RunDir, trainer: Trainer, schedule: Schedule, validation: Validation,
    progress: TrainProgress, metrics: MetricsLog, events: TrainEvents, saved: _Saved | None,
) -> tuple[str, EvalResult | None]:  # fmt: skip
    """The epoch loop from `progress` to the end: train an epoch, validate when due, save. Returns how it
    stopped ("finished" or "max_steps") and the last validation result (main process)."""
    tc, accelerator = cfg.train, trainer.accelerator
    n_batches = schedule.batches_per_epoch
    stopped, last_eval, skipped_images = "finished", None, 0
    start_time, seconds_before = time.perf_counter(), progress.seconds
    with StopRequest() as stop:
        while progress.epoch < tc.epochs and progress.step < schedule.total_steps:
            interrupted, skipped = train_epoch(cfg, run, trainer, schedule, progress, metrics, stop, saved)
            skipped_images += skipped
            progress.seconds = seconds_before + time.perf_counter() - start_time
            epoch_done = progress.batch >= n_batches
            if epoch_done:
                progress.epoch += 1
                progress.batch = 0
            final = progress.epoch >= tc.epochs or progress.step >= schedule.total_steps
            if interrupted and not (epoch_done or final):  # at an epoch's end or the last step: finish it first
                save_training_state(accelerator, run, progress, accelerator.is_main_process)
                raise Interrupted(
                    f"stopped at step {progress.step} (epoch {progress.epoch + 1}, batch {progress.batch} of "
                    f"{n_batches}); saved a resumable state in {run.resume_state}",
                    f"continue with: bioclip train --out {run.root} --resume",
                )
            selection = None
            if (tc.eval_every > 0 and progress.batch == 0 and progress.epoch % tc.eval_every == 0) or final:
                done = round(progress.epoch + progress.batch / n_batches, 2)
                epoch = int(done) if done == int(done) else done
                result, selection = validate(cfg, trainer, validation, progress, epoch)
                if result is not None:
                    _record_validation(cfg, trainer, progress, metrics, events, epoch, result, selection)
                    last_eval = result
            saved = save(cfg, run, trainer, progress, selection)
            if final and progress.epoch < tc.epochs:
                stopped = "max_steps"
            if not final and any_process(accelerator, stop.requested):
                raise Interrupted(
                    f"stopped after epoch {progress.epoch} (step {progress.step}); saved a resumable state in "
                    f"{run.resume_state}",
                    f"continue with: bioclip train --out {run.root} --resume",
                )
    if skipped_images and accelerator.is_main_process:
        events.message(f"skipped {skipped_images} training row(s) with unreadable images (data.bad_images: skip)")
    return stopped, last_eval


def _record_validation(
    cfg: RunConfig, trainer: Trainer, progress: TrainProgress, metrics: MetricsLog, events: TrainEvents,
    epoch: float, result: EvalResult, selection: Selection,
) -> None:  # fmt: skip
    saved = result.to_json()
    metrics.write({"type": "eval", "epoch": epoch, "step": progress.step, "selection": selection.record,
                   "n_queries": saved["n_queries"], "n_keys": saved["n_keys"], "results": saved["results"]})  # fmt: skip
    if cfg.train.report_to:
        trainer.accelerator.log({"eval/selection": selection.record["value"]}, step=progress.step)
    events.evaluated(epoch, progress.step, result, selection.record)


# ------------------------------------------------------------------------------------------- workflow


def train(
    cfg: RunConfig, run_dir: str | Path | None = None, *, resume: bool = False, events: TrainEvents | None = None
) -> TrainResult:
    """Train `cfg` into `run_dir` (default `runs/<cfg.name>`); `resume=True` continues its saved state.

    The run directory is held exclusively for the whole call (:func:`bioclip_cli.run_lock.run_lock`)."""
    events = events or TrainEvents()
    root = Path(run_dir) if run_dir is not None else default_run_dir(cfg.name)
    with run_lock(root, "bioclip train", on_takeover=events.message):
        return _train_locked(cfg, root, resume=resume, events=events)


def _train_locked(cfg: RunConfig, run_dir: Path, *, resume: bool, events: TrainEvents) -> TrainResult:
    check_trainable(cfg)
    run = RunDir(run_dir)
    check_run_dir(run, resume)
    n_train = check_data(cfg)
    check_init(cfg)

    accelerator = training_accelerator(cfg.train, run.root)
    main, world = accelerator.is_main_process, accelerator.num_processes
    schedule = plan_schedule(cfg, n_train, accelerator)
    progress = TrainProgress(total_steps=schedule.total_steps, world=world)
    changes: list[str] = []
    if resume:
        progress = resumed_progress(run, world=world, total_steps=schedule.total_steps, scheduler=cfg.train.scheduler)
        changes = changed_settings(load_run_config(run.config), cfg)
        for change in changes if main else ():
            events.message(f"resuming with a changed setting: {change}")
        if progress.step >= schedule.total_steps:
            return TrainResult(run.root, progress.epoch, progress.step, progress.samples, progress.seconds,
                               "already complete", _best_info(cfg, progress), is_main=main)  # fmt: skip

    if main and not resume:
        save_config(cfg, run.config)
    metrics = MetricsLog(run.metrics, main, fresh=not resume, keep_until_step=progress.step if resume else None)
    trainer = setup(cfg, accelerator, schedule)
    if main:
        events.parameters(trainer.parameter_rows)
    validation = plan_validation(cfg, trainer.raw.modalities)
    if resume:
        restore(accelerator, run, changes)
        if main:
            save_config(cfg, run.config)  # only now: a refused resume leaves the run's configuration as it was
            events.message(
                f"resuming {run.root} at epoch {progress.epoch + 1}, batch {progress.batch} of "
                f"{schedule.batches_per_epoch} (step {progress.step})"
            )
    if cfg.train.report_to:
        accelerator.init_trackers(cfg.name, config={k: str(v) for k, v in flat_settings(to_dict(cfg)).items()})
    saved = _Saved(progress.epoch, progress.step) if resume else None

    stopped, last_eval = fit(cfg, run, trainer, schedule, validation, progress, metrics, events, saved)

    if cfg.train.report_to:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return TrainResult(run.root, progress.epoch, progress.step, progress.samples, progress.seconds, stopped,
                       _best_info(cfg, progress), last_eval, trainer.parameter_rows, main)  # fmt: skip


def _best_info(cfg: RunConfig, progress: TrainProgress) -> dict | None:
    if progress.best_value is None:
        return None
    return {"metric": cfg.train.best.label, "value": progress.best_value, "epoch": progress.best_epoch,
            "step": progress.best_step}  # fmt: skip
