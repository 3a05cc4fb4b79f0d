"""Training throughput: our loop (`bioclip train`) vs a bare step on pre-made tensors, and the data loader alone.

For the tiny preset and the full-size idt-5m model (random weights, LoRA as the preset builds it) on the
bundled sample, CPU:

- loop: :func:`bioclip_cli.workflows.train.train` with `max_steps`, `log_every=1`: the median step time from
  metrics.jsonl (warm-up steps skipped). It includes reading and augmenting the rows (DataLoader workers),
  moving the batch, the loss reduce + finiteness check, the scheduler, logging. metrics.jsonl also says
  how long each step waited for its batch (`data_s`), so the table splits the overhead into data wait and
  the rest of the loop.
- bare: the same model, optimizer and loss on one pre-made batch: forward + loss + backward + step; timed
  before and after the loop (the mean of both medians), so a drift of the shared machine hits both sides.
- loader: the training DataLoader alone (same workers), images/s.

Target: loop overhead = bare rate / loop rate - 1 under 15%. Threads: one torch thread per process and one
DataLoader worker, which on a 2-core machine keeps decoding off the core that computes.

    python bench/bench_train.py                 # tiny (batch 16, 20 steps) and full size (batch 4, 6 steps)
    python bench/bench_train.py --only tiny
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

MODELS = {
    # name: (preset, extra --set overrides, batch, steps)
    "tiny": ("tiny", [], 16, 20),
    "full": (
        "idt-5m",
        ["model.image.weights=null", "model.dna.weights=null", "model.text.weights=null", "data.dataset=custom",
         "data.key_group=other_heldout", "data.val_groups=[val_unseen, other_heldout]"],
        4,
        6,
    ),
}  # fmt: skip
WARMUP = 2
TARGET = 0.15


def _sample_h5(workdir: Path) -> Path:
    from bioclip_cli.data.sample import SAMPLE_TOKENIZER, sample_root
    from bioclip_cli.progress import set_quiet
    from bioclip_cli.workflows.build_hdf5 import build_5m

    set_quiet(True)
    out = workdir / "sample.hdf5"
    build_5m(sample_root(), out, text_tokenizer=SAMPLE_TOKENIZER, workers=2)
    return out


def _config(name: str, h5: Path, workers: int, steps: int | None = None):
    from bioclip_cli.config import load_config

    preset, sets, batch, default_steps = MODELS[name]
    steps = steps or default_steps
    extra = [f"data.hdf5={h5}", f"train.batch_size={batch}", f"train.max_steps={steps}", "train.log_every=1",
             f"data.num_workers={workers}", "train.eval_every=0"]  # fmt: skip
    return load_config(preset, sets=[*sets, *extra]), steps


def bare_steps(cfg, steps: int) -> list[float]:
    """Seconds per step of forward + loss + backward + optimizer step on one pre-made batch."""
    from accelerate.utils import set_seed

    from bioclip_cli.data.datasets import TrainDataset, batch_to_device, collate
    from bioclip_cli.models.build import build_model
    from bioclip_cli.models.loss import ClipLoss
    from bioclip_cli.models.optim import build_optimizer

    set_seed(cfg.train.seed)
    model = build_model(cfg.model).train()
    optimizer = build_optimizer(model.parameters(), cfg.train, cfg.train.lr)
    loss_fn = ClipLoss()
    data = TrainDataset(cfg.data.hdf5, cfg.data.train_group, cfg.data, modalities=cfg.model.modalities,
                        tokenizer=cfg.model.text.tokenizer, seed=cfg.train.seed)  # fmt: skip
    batch = batch_to_device(collate([data[i] for i in range(cfg.train.batch_size)]), "cpu", cfg.data.image)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = loss_fn(model(batch), model.logit_scale)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times[WARMUP:]


def loop_steps(cfg, workdir: Path) -> list[dict]:
    """The metrics.jsonl records (step_s: wall seconds, data_s: of which waiting for the batch) of each step
    of the real training loop, after the warm-up steps."""
    from bioclip_cli.workflows.train import train

    run = workdir / f"run-{cfg.name}-{time.time_ns()}"
    train(cfg, run)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [d for d in lines if d["type"] == "train" and d["step"] > WARMUP]


def loader_rate(cfg, batches: int) -> float:
    """images/s of the training DataLoader alone (same workers and batch size)."""
    import torch

    from bioclip_cli.data.datasets import TrainDataset, collate

    data = TrainDataset(cfg.data.hdf5, cfg.data.train_group, cfg.data, modalities=cfg.model.modalities,
                        tokenizer=cfg.model.text.tokenizer, seed=cfg.train.seed)  # fmt: skip
    loader = torch.utils.data.DataLoader(
        data, batch_size=cfg.train.batch_size, shuffle=True, collate_fn=collate, num_workers=cfg.data.num_workers
    )
    it = iter(loader)
    next(it)  # worker start-up
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            n += len(next(it)["index"])
        except StopIteration:
            break
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    import torch

    from bioclip_cli.progress import set_quiet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(MODELS), help="one model only")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers (default 1)")
    parser.add_argument("--steps", type=int, help="steps per measurement (default: 20 tiny, 6 full)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    set_quiet(True)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        workdir = Path(tmp)
        h5 = _sample_h5(workdir)
        for name in [args.only] if args.only else list(MODELS):
            cfg, steps = _config(name, h5, args.workers, args.steps)
            before = statistics.median(bare_steps(cfg, steps))
            records = loop_steps(cfg, workdir)
            after = statistics.median(bare_steps(cfg, steps))
            bare_s = (before + after) / 2
            step_s = statistics.median(r["step_s"] for r in records)
            data_s = statistics.median(r["data_s"] for r in records)
            results[name] = {
                "batch": cfg.train.batch_size,
                "loop_samples_per_s": cfg.train.batch_size / step_s,
                "bare_samples_per_s": cfg.train.batch_size / bare_s,
                "overhead": step_s / bare_s - 1,
                "data_wait_share": data_s / step_s,
                "overhead_without_data_wait": (step_s - data_s) / bare_s - 1,
                "loader_images_per_s": loader_rate(cfg, batches=8),
            }
    rows = [
        {"model": name, "batch": r["batch"], "loop samples/s": f"{r['loop_samples_per_s']:.2f}",
         "bare samples/s": f"{r['bare_samples_per_s']:.2f}", "overhead": f"{100 * r['overhead']:+.1f}%",
         "target": "< 15%", "ok": "yes" if r["overhead"] < TARGET else "NO",
         "of which data wait": f"{100 * r['data_wait_share']:.1f}% of a step",
         "loop w/o data wait": f"{100 * r['overhead_without_data_wait']:+.1f}%",
         "loader images/s": f"{r['loader_images_per_s']:.0f}"}
        for name, r in results.items()
    ]  # fmt: skip
    from bioclip_cli.cli.output import print_table

    print_table(rows, title=f"training throughput, CPU, 1 thread, {args.workers} DataLoader worker(s)")
    return results


if __name__ == "__main__":
    main()
