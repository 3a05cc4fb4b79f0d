"""Gradient caching: peak memory and time of one training step, batch B in micro-batches of m vs plain steps.

Three configurations, each in a fresh subprocess (peak RSS by `resource.getrusage`, so one run's
allocations never hide another's), same model, random weights, LoRA as the preset builds it, CPU:

- cached: batch B in micro-batches of m (`train.micro_batch_size`), `grad_cache_step`;
- plain-m: a plain step on a batch of m (the memory target: cached within 1.3x of it);
- plain-B: a plain step on the whole batch B (the time target: cached within 1.4x of it; its memory is
  what gradient caching saves).

Each child builds the model, runs one warm-up step on a batch of m, then measures `--steps` steps and
reports the median step time and its peak RSS (the model's weights, Adam state and the step's
activations). Per-sample activation memory = (plain-B − plain-m) / (B − m): the README's GPU table is
derived from it, not measured on a GPU.

    python bench/bench_gradcache.py                                  # idt-5m (full size), B 64, m 8
    python bench/bench_gradcache.py --preset idt-5m --batch 400 --micro 25    # the v1 recipe (slow on CPU)
    python bench/bench_gradcache.py --preset tiny --batch 64 --micro 8
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

RANDOM = ["model.image.weights=null", "model.dna.weights=null", "model.text.weights=null"]


def _batch(model_cfg, n: int):
    import torch

    g = torch.Generator().manual_seed(0)
    size = model_cfg.image.image_size
    out = {"image": torch.randn(n, 3, size, size, generator=g)}
    if "dna" in model_cfg.modalities:
        out["dna"] = torch.randint(4, model_cfg.dna.vocab_size, (n, 130), generator=g)
        out["dna_mask"] = torch.ones(n, 130, dtype=torch.long)
    if "text" in model_cfg.modalities:
        out["text"] = torch.randint(4, model_cfg.text.vocab_size, (n, 20), generator=g)
        out["text_mask"] = torch.ones(n, 20, dtype=torch.long)
        out["text_type"] = torch.zeros(n, 20, dtype=torch.long)
    return out


def child(preset: str, mode: str, batch: int, micro: int, steps: int, threads: int) -> dict:
    import torch

    from bioclip_cli.config import load_config
    from bioclip_cli.models.build import build_model
    from bioclip_cli.models.grad_cache import grad_cache_step
    from bioclip_cli.models.loss import ClipLoss

    torch.set_num_threads(threads)
    cfg = load_config(preset, sets=RANDOM if preset != "tiny" else []).model
    torch.manual_seed(0)
    model = build_model(cfg, pretrained=False)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-5)
    loss_fn = ClipLoss()
    n = micro if mode == "plain-m" else batch
    data = _batch(cfg, n)

    def step(inputs):
        if mode == "cached":
            grad_cache_step(model, inputs, loss_fn, lambda: model.logit_scale, micro)
        else:
            loss_fn(model(inputs), model.logit_scale).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(_batch(cfg, micro) if mode != "plain-B" else _batch(cfg, micro))  # warm-up: Adam state, kernels
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step(data)
        times.append(time.perf_counter() - t)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "rows": n, "step_s": statistics.median(times), "peak_rss_mib": peak_mib}


def run_child(args, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--preset", args.preset, "--batch", str(args.batch),
           "--micro", str(args.micro), "--steps", str(args.steps), "--threads", str(args.threads)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _load() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def main(preset: str = "idt-5m", batch: int = 64, micro: int = 8, steps: int = 2, threads: int = 2) -> dict:
    args = argparse.Namespace(preset=preset, batch=batch, micro=micro, steps=steps, threads=threads)
    load = _load()
    runs = {mode: run_child(args, mode) for mode in ("plain-m", "cached", "plain-B")}
    c, m, b = runs["cached"], runs["plain-m"], runs["plain-B"]
    per_sample = (b["peak_rss_mib"] - m["peak_rss_mib"]) / (batch - micro)
    result = {
        "preset": preset,
        "batch": batch,
        "micro": micro,
        **{f"{k}_{field}": v[field] for k, v in runs.items() for field in ("step_s", "peak_rss_mib")},
        "memory_vs_plain_micro": c["peak_rss_mib"] / m["peak_rss_mib"],
        "memory_vs_plain_batch": c["peak_rss_mib"] / b["peak_rss_mib"],
        "time_vs_plain_batch": c["step_s"] / b["step_s"],
        "activation_mib_per_sample": per_sample,
        "fixed_mib": m["peak_rss_mib"] - micro * per_sample,
        "load_average": [load, _load()],
    }
    print(f"gradient caching, {preset}, batch {batch} in micro-batches of {micro} ({steps} timed steps each)")
    print(f"{'configuration':<30}{'step s':>10}{'peak RSS MiB':>15}")
    for mode, label in (("plain-m", f"plain, batch {micro}"), ("cached", f"cached, {batch} as {micro}s"),
                        ("plain-B", f"plain, batch {batch}")):  # fmt: skip
        print(f"{label:<30}{runs[mode]['step_s']:>10.2f}{runs[mode]['peak_rss_mib']:>15.0f}")
    print(f"memory cached / plain-{micro}: {result['memory_vs_plain_micro']:.2f}x (target <= 1.3)")
    print(f"time cached / plain-{batch}: {result['time_vs_plain_batch']:.2f}x (target <= 1.4)")
    print(f"activation memory per sample: {per_sample:.1f} MiB; load average {load:.1f} -> {_load():.1f}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="idt-5m", help="model preset (random weights)")
    parser.add_argument("--batch", type=int, default=64, help="the contrastive batch B")
    parser.add_argument("--micro", type=int, default=8, help="micro-batch size m")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per configuration")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        print(json.dumps(child(a.preset, a.child, a.batch, a.micro, a.steps, a.threads)))
    else:
        main(a.preset, a.batch, a.micro, a.steps, a.threads)
