"""Runs: what one experiment is on disk and while it runs, shared by the workflows.

- :mod:`.run_dir`: the run directory's layout (`runs/NAME/`), finding a run and its checkpoints, and the
  one "run directory not found" error;
- :mod:`.train_state`: what training keeps between steps and launches (resume state, metrics log, Ctrl-C);
- :mod:`.accelerator`: the Accelerate `Accelerator` whose process group matches the launch.

Not a workflow itself: the workflows (`train`, `embed`, `evaluate`, `predict`) import it, never each other.
"""
