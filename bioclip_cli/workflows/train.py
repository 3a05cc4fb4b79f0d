"""`bioclip train`: contrastive training with Accelerate, from a laptop CPU to many GPUs.

One call of :func:`train` runs a configuration (a preset, resolved) into a run directory
(:mod:`.run_dir`). Accelerate places the model, applies mixed precision, accumulates gradients and wraps
the model in DDP (real gradient synchronisation) when launched with several processes
(`accelerate launch -m bioclip_cli train ...` or torchrun). The order of the training rows changes every
epoch from the seed (:mod:`.sampler`); the recipe (v1 Adam + constant lr + local loss, or v2 AdamW +
one-cycle + learned temperature + gathered loss + bf16) comes from the configuration (:mod:`.optim`).

After every `eval_every` epochs and at the end, the model embeds `all_keys`, `val_seen` and `val_unseen`
(:func:`bioclip_cli.models.encode.encode_group`) and the retrieval metrics are computed in memory
(:func:`bioclip_cli.retrieval.evaluation.evaluate_arrays`); `checkpoints/last` (and `checkpoints/best` when
`train.best` improved) are written atomically, and so is the full training state for `--resume`
(`checkpoints/resume/`: model, optimizer, schedule, RNG states of every process, sampler position, step).
A run of 2 epochs and a run of 1 epoch resumed for a second end with identical weights.

Ctrl-C stops at the end of the current step, saves a resumable state and raises
:class:`~bioclip_cli.errors.Interrupted`. A non-finite loss stops before the optimizer step, keeps the
last good checkpoint and raises :class:`TrainingDiverged` naming the step.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from bioclip_cli.config import load_config, load_run_config, save_config, to_dict
from bioclip_cli.config.schema import MODALITIES, RunConfig
from bioclip_cli.errors import BioclipError, ConfigError, DataError, Interrupted
from bioclip_cli.run_lock import run_lock
from bioclip_cli.workflows.run_dir import RunDir, default_run_dir, list_runs
from bioclip_cli.workflows.train_state import (
    PROGRESS_FILE,
    MetricsLog,
    StopRequest,
    TrainProgress,
    any_process,
    save_training_state,
    weights_digest,
)

# Settings that may change when a run is resumed without changing what the saved state means.
RESUMABLE_CHANGES = (
    "name",
    "description",
    "data.hdf5",
    "data.num_workers",
    "train.epochs",
    "train.max_steps",
    "train.eval_every",
    "train.log_every",
    "train.report_to",
    "eval.batch_size",
)


class TrainingDiverged(BioclipError):
    """The loss became NaN or infinite; nothing was saved after the last good checkpoint."""


# ------------------------------------------------------------------------------------ events, result


class TrainEvents:
    """What a run tells its caller as it goes (the command line prints it; a notebook may ignore it)."""

    def message(self, text: str) -> None:  # noqa: B027 - a no-op default on purpose
        pass

    def parameters(self, rows: list[dict]) -> None:  # noqa: B027
        pass

    def evaluated(self, epoch: float, step: int, result: dict, selection: dict) -> None:  # noqa: B027
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
    last_eval: dict | None = None  # the latest evaluate_arrays result
    parameters: list[dict] = field(default_factory=list)
    is_main: bool = True  # False on the other processes of a multi-process launch (they print nothing)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------------------------- checks


def resume_config(run_dir: str | Path, files=(), sets=()) -> RunConfig:
    """The configuration to resume a run with: its saved config.yaml, then `--config` files and `--set`s."""
    run = _existing_run(Path(run_dir))
    if not run.config.is_file():
        raise ConfigError(
            "resume", f"nothing to resume in {run.root}: it has no config.yaml", "start it without --resume"
        )
    return load_config(str(run.config), list(files), list(sets))


def _existing_run(path: Path) -> RunDir:
    if not path.is_dir():
        found = list_runs(path.parent)
        where = f"runs in {path.parent}/: {', '.join(found)}" if found else f"no runs in {path.parent}/"
        raise ConfigError("resume", f"nothing to resume: {path} does not exist ({where})", "start it without --resume")
    return RunDir(path)


def check_run_dir(run: RunDir, resume: bool) -> None:
    """Refuse to train over a finished or started run unless resuming; refuse to resume nothing."""
    if resume:
        _existing_run(run.root)
        if not run.has_resume_state():
            raise ConfigError(
                "resume",
                f"nothing to resume in {run.root}: it has no saved training state ({run.resume_state}/{PROGRESS_FILE})",
                f"start it without --resume: bioclip train --out {run.root} --preset PRESET",
            )
        return
    if run.has_checkpoints():
        raise ConfigError(
            "out",
            f"{run.root} already holds a run (checkpoints in {run.checkpoints}); refusing to overwrite it",
            f"continue it with --resume, or train into a new directory with --out {run.root}-2",
        )


def check_data(cfg: RunConfig) -> int:
    """The HDF5 and every group training reads exist; returns the training group's rows."""
    from bioclip_cli.data.hdf5 import BioscanH5

    if cfg.data.dataset == "insect" and not Path(cfg.data.hdf5).is_file():
        raise DataError(
            cfg.data.hdf5,
            f"dataset file {cfg.data.hdf5} does not exist",
            f"bioclip download insect --root data/ && bioclip build-hdf5 insect --root data/ --out {cfg.data.hdf5}",
        )
    with BioscanH5(cfg.data.hdf5) as h5:
        n_train = len(h5.group(cfg.data.train_group))
        for group in (cfg.data.key_group, *cfg.data.val_groups):
            h5.group(group)
    return n_train


def check_init(cfg: RunConfig) -> None:
    """The starting checkpoint (`model.checkpoint`, `--init`) exists when one is named."""
    path = cfg.model.checkpoint
    if path and not Path(path).exists():
        raise ConfigError(
            "model.checkpoint",
            f"the starting checkpoint {path} (model.checkpoint) does not exist",
            f"download it with `bioclip download checkpoints --preset {cfg.name}`, pass --init FILE, "
            "or --init none to start from the pretrained encoders",
        )


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def changed_settings(saved: RunConfig, new: RunConfig) -> list[str]:
    """`key: old -> new` for every setting that differs, except those a resume may change."""
    a, b = _flat(to_dict(saved)), _flat(to_dict(new))
    keys = [
        k for k in b if a.get(k) != b.get(k) and not any(k == r or k.startswith(r + ".") for r in RESUMABLE_CHANGES)
    ]
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys]


# -------------------------------------------------------------------------------------------- helpers


def _make_accelerator(cfg: RunConfig, run: RunDir):
    import importlib.util

    from accelerate.utils import GradientAccumulationPlugin

    from bioclip_cli.workflows.accelerator import make_accelerator

    for tracker in cfg.train.report_to:
        if importlib.util.find_spec(tracker) is None:
            raise ConfigError(
                "train.report_to",
                f"--report-to {tracker} needs the {tracker} package, which is not installed",
                f"pip install 'bioscan-clip[{tracker}]', or leave --report-to out",
            )
    precision = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[cfg.train.precision]
    accelerator = make_accelerator(
        mixed_precision=precision,
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=cfg.train.grad_accum, sync_with_dataloader=False
        ),
        log_with=list(cfg.train.report_to) or None,
        project_dir=str(run.root),
    )
    if cfg.train.precision == "fp16" and accelerator.device.type == "cpu":
        raise ConfigError("train.precision", "--precision fp16 needs a GPU; on a CPU use --precision bf16 or fp32")
    return accelerator


def _selection(cfg: RunConfig, result: dict) -> float:
    from bioclip_cli.retrieval.evaluation import mean_seen_unseen

    b = cfg.train.best
    return mean_seen_unseen(result, b.query, b.key, b.average, b.k, b.level)


def _eval_features(cfg: RunConfig, modalities) -> tuple[list[str], list[str]]:
    base = [m for m in MODALITIES if m in modalities]
    b = cfg.train.best
    return base + ([b.query] if b.query not in base else []), base + ([b.key] if b.key not in base else [])


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
    if not cfg.train.enabled:
        raise ConfigError(
            "train.enabled",
            f"{cfg.name} is an untrained baseline (train.enabled: false): there is nothing to train",
            f"embed it instead: bioclip embed --preset {cfg.name}",
        )
    if len(cfg.model.modalities) < 2:
        raise ConfigError("model.modalities", "contrastive training needs at least two modalities")
    run = RunDir(run_dir)
    check_run_dir(run, resume)
    n_train = check_data(cfg)
    check_init(cfg)

    import torch
    from accelerate.utils import gather_object, set_seed

    from bioclip_cli.data.datasets import EvalDataset, TrainDataset, batch_to_device, collate
    from bioclip_cli.data.sampler import EpochSampler
    from bioclip_cli.models.build import build_model
    from bioclip_cli.models.checkpoint import save_checkpoint
    from bioclip_cli.models.encode import encode_group, ignore_sigint
    from bioclip_cli.models.grad_cache import grad_cache_step
    from bioclip_cli.models.loss import ClipLoss
    from bioclip_cli.progress import Bar, progress_bar
    from bioclip_cli.retrieval.evaluation import evaluate_arrays
    from bioclip_cli.workflows.optim import build_optimizer, build_scheduler, current_lr, effective_lr

    tc = cfg.train
    accelerator = _make_accelerator(cfg, run)
    main, world, device = accelerator.is_main_process, accelerator.num_processes, accelerator.device
    sampler = EpochSampler(
        n_train, tc.batch_size, seed=tc.seed, rank=accelerator.process_index, world=world, accumulate=tc.grad_accum
    )
    steps_per_epoch = sampler.batches_per_epoch // tc.grad_accum
    total_steps = steps_per_epoch * tc.epochs
    if tc.max_steps is not None:
        total_steps = min(total_steps, tc.max_steps)
    global_batch = tc.batch_size * world * tc.grad_accum

    changes: list[str] = []
    progress = TrainProgress(total_steps=total_steps, world=world)
    if resume:
        progress = TrainProgress.read(run.resume_state / PROGRESS_FILE)
        if progress.world != world:
            raise ConfigError(
                "resume",
                f"{run.root} was trained with {progress.world} process(es); this launch has {world}",
                f"resume with the same number of processes (accelerate launch --multi_gpu --num_processes "
                f"{progress.world})",
            )
        if tc.scheduler in ("onecycle", "cosine") and progress.total_steps != total_steps:
            schedule = {"onecycle": "one-cycle", "cosine": "cosine"}[tc.scheduler]
            raise ConfigError(
                "train.epochs",
                f"the {schedule} schedule of {run.root} spans {progress.total_steps} steps; with these epochs/max_steps "
                f"it would span {total_steps}, which changes the learning rate of the steps already taken",
                "resume with the run's own train.epochs and train.max_steps",
            )
        changes = changed_settings(load_run_config(run.config), cfg)
        for change in changes if main else ():
            events.message(f"resuming with a changed setting: {change}")
        if progress.step >= total_steps:
            return TrainResult(run.root, progress.epoch, progress.step, progress.samples, progress.seconds,
                               "already complete", _best_info(cfg, progress), is_main=main)  # fmt: skip

    if main and not resume:
        save_config(cfg, run.config)
    metrics = MetricsLog(run.metrics, main, fresh=not resume, keep_until_step=progress.step if resume else None)

    set_seed(tc.seed)
    model = build_model(cfg.model)
    if tc.grad_checkpointing:
        model.enable_gradient_checkpointing()
    parameter_rows = model.trainable_parameter_table()
    if main:
        events.parameters(parameter_rows)
    lr = effective_lr(tc, global_batch)
    optimizer = build_optimizer(model.parameters(), tc, lr)
    scheduler = build_scheduler(optimizer, tc, lr, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    raw = accelerator.unwrap_model(model)
    trainable = [p for p in raw.parameters() if p.requires_grad]

    dataset = TrainDataset(cfg.data.hdf5, cfg.data.train_group, cfg)
    roles = {"key": cfg.data.key_group, "seen": cfg.data.val_groups[0], "unseen": cfg.data.val_groups[1]}
    eval_sets = {role: EvalDataset(cfg.data.hdf5, group, cfg) for role, group in roles.items()}
    loss_fn = ClipLoss(gather=tc.loss == "gathered")
    queries, keys = _eval_features(cfg, raw.modalities)
    ks = sorted(set(cfg.eval.k) | {tc.best.k})
    levels = list(dict.fromkeys([*cfg.eval.levels, tc.best.level]))
    eval_autocast = "bf16" if tc.precision == "bf16" else cfg.eval.autocast

    if resume:
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
    if resume and main:
        save_config(cfg, run.config)  # only now: a refused resume leaves the run's configuration as it was
        events.message(
            f"resuming {run.root} at epoch {progress.epoch + 1}, batch {progress.batch} of {sampler.batches_per_epoch}"
            f" (step {progress.step})"
        )
    if tc.report_to:
        accelerator.init_trackers(cfg.name, config={k: str(v) for k, v in _flat(to_dict(cfg)).items()})
    saved_at = {"epoch": progress.epoch, "step": progress.step} if resume else None
    last_eval: dict | None = None
    num_workers = cfg.data.num_workers

    def evaluate(epoch: float) -> dict | None:
        nonlocal last_eval
        rows = sum(len(ds) for ds in eval_sets.values())
        with progress_bar(rows, "evaluating", unit="rows") if main else nullcontext(Bar()) as bar:
            feats = {
                role: encode_group(raw, ds, device=device, batch_size=cfg.eval.batch_size, num_workers=num_workers,
                                   autocast=eval_autocast, accelerator=accelerator, bar=bar,
                                   merge_lora=cfg.eval.merge_lora)
                for role, ds in eval_sets.items()
            }  # fmt: skip
        raw.train()
        info = None
        if main:
            result = evaluate_arrays(
                {"seen": feats["seen"], "unseen": feats["unseen"]}, feats["key"],
                {"seen": eval_sets["seen"].labels, "unseen": eval_sets["unseen"].labels}, eval_sets["key"].labels,
                queries=queries, keys=keys, ks=ks, levels=levels, search=cfg.eval.search,
            )  # fmt: skip
            value = _selection(cfg, result)
            is_best = progress.best_value is None or value > progress.best_value
            if is_best:
                progress.best_value, progress.best_epoch, progress.best_step = value, epoch, progress.step
            selection = {"metric": tc.best.label, "value": value, "best": progress.best_value,
                         "best_epoch": progress.best_epoch, "is_best": is_best}  # fmt: skip
            metrics.write({"type": "eval", "epoch": epoch, "step": progress.step, "selection": selection,
                           "n_queries": result["n_queries"], "n_keys": result["n_keys"],
                           "results": result["results"]})  # fmt: skip
            if tc.report_to:
                accelerator.log({"eval/selection": value}, step=progress.step)
            events.evaluated(epoch, progress.step, result, selection)
            last_eval = result
            info = {"is_best": is_best, "selection": selection}
        shared = [info]
        if world > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(shared)
        return shared[0]

    def save(evaluation: dict | None) -> None:
        nonlocal saved_at
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
                    "processes": world, "selection": evaluation["selection"] if evaluation else None}  # fmt: skip
            save_checkpoint(raw, run.last, config=cfg, meta=meta)
            if evaluation is not None and evaluation["is_best"]:
                save_checkpoint(raw, run.best, config=cfg, meta=meta)
        save_training_state(accelerator, run, progress, main)
        saved_at = {"epoch": progress.epoch, "step": progress.step}

    def diverged(value: float) -> TrainingDiverged:
        n = sampler.batches_per_epoch
        where = f"step {progress.step + 1} (epoch {progress.epoch + 1}, batch {progress.batch + 1} of {n})"
        if saved_at is None:
            kept = "nothing was saved (no epoch had finished)"
        else:
            kept = (f"{run.last} and the resume state from step {saved_at['step']} (epoch {saved_at['epoch']}) "
                    "are kept unchanged")  # fmt: skip
        return TrainingDiverged(
            f"the loss became {value} at {where}; training stopped before that optimizer step; {kept}",
            "lower train.lr, set train.grad_clip (e.g. --set train.grad_clip=1.0) or use --precision fp32, "
            f"then continue with `bioclip train --out {run.root} --resume`",
        )

    stopped = "finished"
    skipped_images = 0
    start_time = time.perf_counter()
    seconds_before = progress.seconds
    with StopRequest() as stop:
        while progress.epoch < tc.epochs and progress.step < total_steps:
            epoch = progress.epoch
            sampler.set_epoch(epoch, start=progress.batch)
            dataset.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(
                dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                pin_memory=device.type == "cuda", worker_init_fn=ignore_sigint if num_workers else None,
                generator=torch.Generator().manual_seed(tc.seed * 1_000_003 + epoch),
            )  # fmt: skip
            model.train()
            micro_losses = []
            interrupted = False
            interval = {"t": time.perf_counter(), "steps": 0, "data": 0.0}
            bar_ctx = (
                progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{tc.epochs}", unit="steps")
                if main
                else nullcontext(Bar())
            )
            with bar_ctx as bar:
                bar.update(completed=progress.batch // tc.grad_accum)
                batches = iter(loader)
                while True:
                    fetch = time.perf_counter()
                    batch = next(batches, None)
                    interval["data"] += time.perf_counter() - fetch
                    if batch is None:
                        break
                    skipped_images += tc.batch_size - len(batch["index"])  # unreadable images (data.bad_images)
                    batch = batch_to_device(batch, device, cfg)  # uint8 images -> float here
                    with accelerator.accumulate(model):
                        if tc.micro_batch_size:  # gradient caching: the full-batch loss, micro-batch memory
                            loss = grad_cache_step(
                                model, batch, loss_fn, lambda: raw.logit_scale, tc.micro_batch_size,
                                backward=accelerator.backward, no_sync=lambda: accelerator.no_sync(model),
                            )  # fmt: skip
                        else:
                            loss = loss_fn(model(batch), raw.logit_scale)
                            accelerator.backward(loss)
                        micro_losses.append(loss.detach().float())
                        synced = accelerator.sync_gradients
                        if synced:
                            step_losses = torch.stack(micro_losses)
                            stats = torch.stack([
                                step_losses.sum(), (~torch.isfinite(step_losses)).sum().float(),
                                torch.tensor(float(stop.requested), device=step_losses.device),
                            ])  # fmt: skip
                            stats = accelerator.reduce(stats, reduction="sum").tolist()
                            step_loss = stats[0] / (len(micro_losses) * world)
                            micro_losses = []
                            if stats[1] > 0:
                                raise diverged(step_loss)
                            if tc.grad_clip is not None:
                                accelerator.clip_grad_norm_(trainable, tc.grad_clip)
                            optimizer.step()
                            if not accelerator.optimizer_step_was_skipped:
                                scheduler.step()
                            optimizer.zero_grad(set_to_none=True)
                    progress.batch += 1
                    if not synced:
                        continue
                    progress.step += 1
                    progress.samples += global_batch
                    interval["steps"] += 1
                    bar.advance(1)
                    if progress.step % tc.log_every == 0 or progress.step == total_steps:
                        now = time.perf_counter()
                        steps_done = interval["steps"]
                        rate = steps_done * global_batch / max(now - interval["t"], 1e-9)
                        step_s, data_s = (now - interval["t"]) / steps_done, interval["data"] / steps_done
                        interval.update(t=now, steps=0, data=0.0)
                        scale = raw.logit_scale.detach().float().item()
                        record = {"type": "train", "epoch": epoch + progress.batch / sampler.batches_per_epoch,
                                  "step": progress.step, "loss": step_loss, "lr": current_lr(optimizer),
                                  "logit_scale": scale, "samples_per_s": rate, "step_s": step_s,
                                  "data_s": data_s}  # fmt: skip
                        metrics.write(record)
                        if tc.report_to:
                            accelerator.log({"train/loss": step_loss, "train/lr": record["lr"]}, step=progress.step)
                        bar.update(loss=f"{step_loss:.4f}", lr=f"{record['lr']:.2e}", samples_s=f"{rate:,.0f}")
                    interrupted = stats[2] > 0
                    if interrupted or progress.step >= total_steps:
                        break
            progress.seconds = seconds_before + time.perf_counter() - start_time
            epoch_done = progress.batch >= sampler.batches_per_epoch
            if epoch_done:
                progress.epoch += 1
                progress.batch = 0
            final = progress.epoch >= tc.epochs or progress.step >= total_steps
            if interrupted and not (epoch_done or final):  # at an epoch's end or the last step: finish it first
                save_training_state(accelerator, run, progress, main)
                raise Interrupted(
                    f"stopped at step {progress.step} (epoch {progress.epoch + 1}, batch {progress.batch} of "
                    f"{sampler.batches_per_epoch}); saved a resumable state in {run.resume_state}",
                    f"continue with: bioclip train --out {run.root} --resume",
                )
            due = tc.eval_every > 0 and progress.batch == 0 and progress.epoch % tc.eval_every == 0
            done = round(progress.epoch + progress.batch / sampler.batches_per_epoch, 2)
            evaluation = evaluate(int(done) if done == int(done) else done) if (due or final) else None
            save(evaluation)
            if final and progress.epoch < tc.epochs:
                stopped = "max_steps"
            if not final and any_process(accelerator, stop.requested):
                raise Interrupted(
                    f"stopped after epoch {progress.epoch} (step {progress.step}); saved a resumable state in "
                    f"{run.resume_state}",
                    f"continue with: bioclip train --out {run.root} --resume",
                )
    if skipped_images and main:
        events.message(f"skipped {skipped_images} training row(s) with unreadable images (data.bad_images: skip)")
    if tc.report_to:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return TrainResult(run.root, progress.epoch, progress.step, progress.samples, progress.seconds, stopped,
                       _best_info(cfg, progress), last_eval, parameter_rows, main)  # fmt: skip


def _best_info(cfg: RunConfig, progress: TrainProgress) -> dict | None:
    if progress.best_value is None:
        return None
    return {"metric": cfg.train.best.label, "value": progress.best_value, "epoch": progress.best_epoch,
            "step": progress.best_step}  # fmt: skip
