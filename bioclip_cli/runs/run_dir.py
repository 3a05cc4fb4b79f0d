"""The run directory: everything one experiment made, in one place (docs/architecture.md, Data flow).

    runs/NAME/
        config.yaml             the resolved configuration (reload with load_run_config)
        checkpoints/last/       the model after the latest finished epoch (model.safetensors, config.yaml, meta.json)
        checkpoints/best/       the model with the best selection metric so far (train.best)
        checkpoints/resume/     the full training state for --resume (Accelerate: model, optimizer, schedule,
                                RNG states of every process, sampler position, step)
        metrics.jsonl           one JSON object per logged step and per evaluation
        embeddings/             extracted_feature_from_{split}_split.hdf5 + labels_{split}.json (bioclip embed)
        results/                eval_{split}.json (bioclip eval)

Commands after `train` take `--run runs/NAME` and find their inputs here; a wrong path gets one error,
from :func:`check_run_exists`, that lists the runs which do exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bioclip_cli.errors import DataError

RUNS_ROOT = Path("runs")
CHECKPOINTS = ("best", "last")


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best"

    @property
    def resume_state(self) -> Path:
        return self.checkpoints / "resume"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def results(self) -> Path:
        return self.root / "results"

    def checkpoint(self, which: str) -> Path:
        return self.best if which == "best" else self.last

    def has_checkpoints(self) -> bool:
        return self.checkpoints.is_dir() and any(self.checkpoints.iterdir())

    def has_resume_state(self) -> bool:
        return (self.resume_state / "progress.json").is_file()


def default_run_dir(name: str) -> Path:
    """`runs/<name>`: where a preset's run goes unless `--out` says otherwise."""
    return RUNS_ROOT / name


def is_run(path: str | Path) -> bool:
    """A folder that `bioclip train` or `bioclip embed` made: a config.yaml, checkpoints/ or embeddings/ in it."""
    run = RunDir(Path(path))
    return run.config.is_file() or run.checkpoints.is_dir() or run.embeddings.is_dir()


def list_runs(parent: str | Path) -> list[str]:
    """Names of the run directories (:func:`is_run`) under `parent`."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    return sorted(p.name for p in parent.iterdir() if p.is_dir() and is_run(p))


def _runs_note(parent: Path) -> str:
    found = list_runs(parent)
    return f"runs in {parent}/: {', '.join(found)}" if found else f"no runs in {parent}/"


RUN_NOT_FOUND_HINT = "train one with `bioclip train --preset demo`, or pass an existing --run"


def check_run_exists(path: str | Path, hint: str = RUN_NOT_FOUND_HINT) -> Path:
    """`path` when it is a folder; else THE "run directory not found" error (every command words it so),
    listing the runs beside it. `hint` says what to do instead (e.g. start without --resume)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(path, f"run directory {path} does not exist ({_runs_note(path.parent)})", hint)
    return path


def resolve_run(path: str | Path) -> RunDir:
    """The run directory at `path`; DataError listing the runs beside it when it is not one."""
    run = RunDir(check_run_exists(path))
    path = run.root
    if not run.config.is_file():
        raise DataError(
            path,
            f"{path} is not a run directory: it has no config.yaml ({_runs_note(path.parent)})",
            "pass the folder that `bioclip train` made (runs/NAME)",
        )
    return run


def run_checkpoint(run: RunDir, which: str = "best") -> Path:
    """`checkpoints/best` or `checkpoints/last` of a run; DataError saying which ones exist."""
    if which not in CHECKPOINTS:
        raise DataError(run.root, f"--which must be best or last, got {which!r}")
    path = run.checkpoint(which)
    if (path / "model.safetensors").is_file():
        return path
    have = [w for w in CHECKPOINTS if (run.checkpoint(w) / "model.safetensors").is_file()]
    if have:
        hint = f"use --which {have[0]}"
    elif run.has_resume_state():
        hint = f"the run stopped before its first evaluation; continue it: bioclip train --out {run.root} --resume"
    else:
        hint = f"train it: bioclip train --out {run.root} --preset PRESET"
    have_text = ", ".join(have) if have else "none"
    raise DataError(path, f"{run.root} has no {which} checkpoint ({path} is missing; checkpoints: {have_text})", hint)
