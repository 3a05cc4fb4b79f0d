"""Whether a run may start or be resumed, and whether a saved state fits the launch that resumes it.

- :func:`check_trainable`, :func:`check_data`, :func:`check_init`: the configuration trains something, its
  HDF5 and groups exist, its starting checkpoint (if any) exists;
- :func:`check_run_dir`: refuse to train over a started run unless resuming, and to resume nothing;
- :func:`resumed_progress`: the saved :class:`~bioclip_cli.runs.train_state.TrainProgress`, refused when
  the number of processes differs, or the length of a schedule over all the steps (one-cycle, cosine);
- :func:`changed_settings`: what a resume changes, except the settings in :data:`RESUMABLE_CHANGES`
  (which do not change what the saved state means).
"""

from __future__ import annotations

from pathlib import Path

from bioclip_cli.config import to_dict
from bioclip_cli.config.schema import RunConfig
from bioclip_cli.errors import ConfigError, DataError
from bioclip_cli.runs.run_dir import RunDir, check_run_exists
from bioclip_cli.runs.train_state import PROGRESS_FILE, TrainProgress

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
NOTHING_TO_RESUME_HINT = "start it without --resume"


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


def check_trainable(cfg: RunConfig) -> None:
    """The configuration trains something: training is on and there are two modalities to align."""
    if not cfg.train.enabled:
        raise ConfigError(
            "train.enabled",
            f"{cfg.name} is an untrained baseline (train.enabled: false): there is nothing to train",
            f"embed it instead: bioclip embed --preset {cfg.name}",
        )
    if len(cfg.model.modalities) < 2:
        raise ConfigError("model.modalities", "contrastive training needs at least two modalities")


def check_run_dir(run: RunDir, resume: bool) -> None:
    """Refuse to train over a finished or started run unless resuming; refuse to resume nothing."""
    if resume:
        check_run_exists(run.root, hint=NOTHING_TO_RESUME_HINT)
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


# learning-rate schedules whose every step depends on the run's total number of steps (train.scheduler -> name)
SCHEDULES_OVER_ALL_STEPS = {"onecycle": "one-cycle", "cosine": "cosine"}


def resumed_progress(run: RunDir, *, world: int, total_steps: int, scheduler: str) -> TrainProgress:
    """The saved progress of a run being resumed by `world` processes over a schedule of `total_steps`
    optimizer steps; refused when the processes differ, or when a schedule that spans all the steps (one-cycle,
    cosine) would change length."""
    progress = TrainProgress.read(run.resume_state / PROGRESS_FILE)
    if progress.world != world:
        raise ConfigError(
            "resume",
            f"{run.root} was trained with {progress.world} process(es); this launch has {world}",
            f"resume with the same number of processes (accelerate launch --multi_gpu --num_processes "
            f"{progress.world})",
        )
    if scheduler in SCHEDULES_OVER_ALL_STEPS and progress.total_steps != total_steps:
        raise ConfigError(
            "train.epochs",
            f"the {SCHEDULES_OVER_ALL_STEPS[scheduler]} schedule of {run.root} spans {progress.total_steps} steps; with these epochs/max_steps "
            f"it would span {total_steps}, which changes the learning rate of the steps already taken",
            "resume with the run's own train.epochs and train.max_steps",
        )
    return progress


def flat_settings(d: dict, prefix: str = "") -> dict:
    """A nested settings dict as `{"train.lr": 0.001, ...}`."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_settings(v, key + "."))
        else:
            out[key] = v
    return out


def changed_settings(saved: RunConfig, new: RunConfig) -> list[str]:
    """`key: old -> new` for every setting that differs, except those a resume may change."""
    a, b = flat_settings(to_dict(saved)), flat_settings(to_dict(new))
    keys = [
        k for k in b if a.get(k) != b.get(k) and not any(k == r or k.startswith(r + ".") for r in RESUMABLE_CHANGES)
    ]
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys]
