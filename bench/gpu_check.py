"""GPU check, within 7 minutes on one CUDA device: full-size training, embedding and 5M-scale search.

1. A few bf16-autocast training steps of the full-size image+DNA+text model (idt-5m shapes: ViT-B/16,
   BarcodeBERT-base, BERT-small; random weights, no download) on a synthetic batch of 256, for the v1
   recipe (LoRA r=4, Adam) and the v2 recipe (idt-5m-clibd: full fine-tuning, AdamW, learned temperature).
2. Embedding throughput of each full-size encoder (batch 256; fp32 and bf16 autocast, inference mode).
3. Exact top-5 search at the BIOSCAN-5M validation scale (14,757 + 8,819 queries, 325,668 keys, 768-d):
   faiss-gpu when this faiss build sees the GPU, else the torch path of `FlatIndex`; its neighbour lists are
   compared with a float64 CPU reference on 256 queries.
4. The bf16-screened exact search (docs/lowp_search.md) at the same scale: its speed against the plain
   float32 search of 3 (faiss-gpu or torch) and the share of identical top-5 lists.
5. Gradient caching (`train.micro_batch_size`): CUDA max allocated of a bf16 step of the full-size v1
   model at batch 400 in micro-batches of 25, against plain steps of 25 and of 400 (target 1.3x the
   memory of 25, 1.4x the time of 400).

Prints one table. Exit codes: 0 every check passed; 1 a check failed (its row says why); 2 no CUDA device
(or torch missing): this script never skips a check silently. Installs nothing: run it in the project's
environment (or one with torch, transformers, peft, accelerate, pyyaml), from the checkout:

    bash bench/gpu_check.sh [--budget 420] [--batch 256] [--steps 5] [--gc-batch 400] [--gc-micro 25]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's bioclip_cli, installed or not

SEEN, UNSEEN, KEYS, WIDTH, TOP_K = 14_757, 8_819, 325_668, 768, 5
RANDOM_WEIGHTS = ["model.image.weights=null", "model.dna.weights=null", "model.text.weights=null"]
RECIPES = (("idt-5m", "v1: LoRA r=4, Adam"), ("idt-5m-clibd", "v2: full fine-tuning, AdamW, learned T"))


class CheckFailed(Exception):
    """A check ran and its result is wrong (the row says why)."""


class Report:
    def __init__(self, budget: float):
        self.rows: list[dict] = []
        self.start = time.perf_counter()
        self.budget = budget

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def add(self, check: str, setting: str, value: str, detail: str = "", ok: bool = True) -> None:
        row = {"check": check, "setting": setting, "value": value, "detail": detail, "status": "ok" if ok else "FAILED"}
        self.rows.append(row)
        print(f"[{self.elapsed():6.1f} s] {row['status']:6} {check} | {setting} | {value} | {detail}", flush=True)

    def run(self, check: str, setting: str, needs_s: float, fn) -> None:
        """Run one check; any exception (out of memory included) becomes a FAILED row, never a skip."""
        if self.elapsed() + needs_s > self.budget:
            self.add(
                check, setting, "-", f"not run: {self.elapsed():.0f} s used of the {self.budget:.0f} s budget", False
            )
            return
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - every failure is reported as a row
            last = traceback.extract_tb(exc.__traceback__)[-1]
            where = f"{Path(last.filename).name}:{last.lineno}"
            self.add(check, setting, "-", f"{type(exc).__name__}: {str(exc)[:300]} ({where})", False)
            import torch

            torch.cuda.empty_cache()

    @property
    def failed(self) -> int:
        return sum(r["status"] != "ok" for r in self.rows)

    def table(self) -> str:
        cols = ("check", "setting", "value", "detail", "status")
        widths = {c: max(len(c), *(len(r[c]) for r in self.rows)) for c in cols}
        line = "  ".join(f"{c:<{widths[c]}}" for c in cols)
        out = [line, "  ".join("-" * widths[c] for c in cols)]
        out += ["  ".join(f"{r[c]:<{widths[c]}}" for c in cols) for r in self.rows]
        return "\n".join(out)


def _sync() -> None:
    import torch

    torch.cuda.synchronize()


def synthetic_batch(batch: int, device, seed: int = 0) -> dict:
    """A batch in the training layout: pixels in [0, 1], 133 DNA ids (prefix 0), 20 text ids."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(seed)
    dna = torch.randint(3, 1027, (batch, 133), generator=g)
    dna[:, 0] = 0
    text = torch.randint(1000, 30522, (batch, 20), generator=g)
    text_mask = torch.ones(batch, 20, dtype=torch.long)
    text_mask[:, 12:] = 0
    out = {
        "image": torch.rand(batch, 3, 224, 224, generator=g),
        "dna": dna,
        "dna_mask": torch.ones(batch, 133, dtype=torch.long),
        "text": text * text_mask,
        "text_mask": text_mask,
        "text_type": torch.zeros(batch, 20, dtype=torch.long),
    }
    return {k: v.to(device, non_blocking=True) for k, v in out.items()}


def full_size_model(preset: str, device):
    from bioclip_cli.config import load_config
    from bioclip_cli.models.build import build_model

    cfg = load_config(preset, [], RANDOM_WEIGHTS)
    return cfg, build_model(cfg.model, pretrained=False).to(device)


def check_training(report: Report, preset: str, recipe: str, batch: int, steps: int, device) -> None:
    import torch

    from bioclip_cli.models.loss import ClipLoss
    from bioclip_cli.models.optim import build_optimizer

    torch.cuda.reset_peak_memory_stats()
    cfg, model = full_size_model(preset, device)
    model.train()
    optimizer = build_optimizer(model.parameters(), cfg.train, cfg.train.lr)
    loss_fn = ClipLoss(gather=False)
    data = synthetic_batch(batch, device)
    times, losses = [], []
    for step in range(steps + 2):  # two warm-up steps (kernel selection, allocator)
        _sync()
        t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(model(data), model.logit_scale)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync()
        if step >= 2:
            times.append(time.perf_counter() - t)
        losses.append(float(loss.detach()))
    if not all(math.isfinite(v) for v in losses):
        raise CheckFailed(f"non-finite loss in {losses}")
    step_s = statistics.median(times)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    peak = torch.cuda.max_memory_allocated() / 2**30
    report.add(
        "train step, bf16 autocast",
        f"{preset} ({recipe}), batch {batch}",
        f"{batch / step_s:,.0f} samples/s",
        f"{1000 * step_s:.0f} ms/step (median of {steps}), {trainable / 1e6:.1f} M trainable, peak {peak:.1f} GiB, "
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f}",
    )
    del model, optimizer, data
    torch.cuda.empty_cache()


def check_embedding(report: Report, batch: int, device) -> None:
    import torch

    _, model = full_size_model("idt-5m", device)
    model.eval()
    data = synthetic_batch(batch, device, seed=1)
    forwards = {
        "image (ViT-B/16, 224 px)": lambda: model.encode_image(data["image"]),
        "dna (BarcodeBERT, 133 tokens)": lambda: model.encode_dna(data["dna"], data["dna_mask"]),
        "text (BERT-small, 20 tokens)": lambda: model.encode_text(data["text"], data["text_mask"], data["text_type"]),
    }
    for name, forward in forwards.items():
        for precision in ("fp32", "bf16"):

            def measure(forward=forward, precision=precision, name=name):
                ctx = (
                    torch.autocast("cuda", dtype=torch.bfloat16)
                    if precision == "bf16"
                    else torch.autocast("cuda", enabled=False)
                )
                with torch.inference_mode(), ctx:
                    out = forward()  # warm-up
                    _sync()
                    n, t = 0, time.perf_counter()
                    while n < 3 or time.perf_counter() - t < 1.0:
                        out = forward()
                        n += 1
                    _sync()
                    seconds = (time.perf_counter() - t) / n
                norms = out.float().norm(dim=1)
                if not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
                    raise CheckFailed(f"embeddings are not unit vectors (norms {norms.min():.4f}..{norms.max():.4f})")
                report.add(
                    "embedding throughput", f"{name}, {precision}, batch {batch}", f"{batch / seconds:,.0f} items/s",
                    f"{1000 * seconds:.1f} ms/batch (mean of {n})",
                )  # fmt: skip

            report.run("embedding throughput", f"{name}, {precision}", 5, measure)
    # model and data are freed when this function returns (the measuring closures hold them until then)


def search_backend() -> tuple[str, str]:
    """The FlatIndex device to ask for, and why: faiss-gpu when this faiss sees a GPU, else the torch path."""
    try:
        import faiss
    except ImportError:
        return "torch:cuda", "torch (faiss not installed)"
    if (faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0) > 0:
        return "cuda:0", "faiss-gpu"
    return "torch:cuda", "torch (this faiss has no GPU support)"


def check_search(report: Report, device, queries_n: int, keys_n: int, sample: int = 256) -> None:
    import numpy as np
    import torch

    from bioclip_cli.retrieval.search import FlatIndex, l2_normalize

    request, backend_note = search_backend()
    g = torch.Generator(device=device).manual_seed(0)
    keys = l2_normalize(torch.randn(keys_n, WIDTH, device=device, generator=g).cpu().numpy())
    queries = l2_normalize(torch.randn(queries_n, WIDTH, device=device, generator=g).cpu().numpy())
    t = time.perf_counter()
    index = FlatIndex(keys, device=request, normalize=False)
    _sync()
    build_s = time.perf_counter() - t
    index.search(queries[:1024], TOP_K, normalize=False)  # warm-up
    _sync()
    t = time.perf_counter()
    scores, neighbors = index.search(queries, TOP_K, normalize=False)
    _sync()
    search_s = time.perf_counter() - t
    rows = np.random.default_rng(0).choice(queries_n, min(sample, queries_n), replace=False)
    exact = queries[rows].astype(np.float64) @ keys.astype(np.float64).T
    reference = np.argsort(-exact, axis=1, kind="stable")[:, :TOP_K]
    same = float((np.sort(reference, 1) == np.sort(neighbors[rows], 1)).all(axis=1).mean())
    if same < 0.99:
        raise CheckFailed(f"only {100 * same:.1f}% of {len(rows)} sampled queries have the float64 top-{TOP_K} set")
    if not np.all(np.diff(scores, axis=1) <= 1e-6):
        raise CheckFailed("scores are not sorted best first")
    report.add(
        "exact search, top-5",
        f"{queries_n:,} queries x {keys_n:,} keys x {WIDTH}, {backend_note} on {index.device}",
        f"{queries_n / search_s:,.0f} queries/s",
        f"search {search_s:.2f} s, index build {build_s:.2f} s; {100 * same:.1f}% of {len(rows)} sampled queries "
        "match a float64 CPU reference",
    )


def check_screened_search(report: Report, device, queries_n: int, keys_n: int) -> None:
    """The bf16-screened exact search (screen on the GPU, faiss CPU rescoring) against the plain float32
    search on the GPU (faiss-gpu, else torch): time ratio and the share of identical top-5 lists."""
    import torch

    from bioclip_cli.retrieval.screened_search import ScreenedIndex
    from bioclip_cli.retrieval.search import FlatIndex, l2_normalize

    request, backend_note = search_backend()
    g = torch.Generator(device=device).manual_seed(1)
    keys = l2_normalize(torch.randn(keys_n, WIDTH, device=device, generator=g).cpu().numpy())
    queries = l2_normalize(torch.randn(queries_n, WIDTH, device=device, generator=g).cpu().numpy())
    plain = FlatIndex(keys, device=request, normalize=False)
    plain.search(queries[:1024], TOP_K, normalize=False)  # warm-up
    screened = ScreenedIndex(keys, normalize=False, device="cuda")
    screened.search(queries[:1024], TOP_K, normalize=False)
    timings = {}
    for name, index in (("plain", plain), ("screened", screened), ("plain2", plain)):
        _sync()
        t = time.perf_counter()
        _, timings[f"{name}_ids"] = index.search(queries, TOP_K, normalize=False)
        _sync()
        timings[name] = time.perf_counter() - t
    plain_s = (timings["plain"] + timings["plain2"]) / 2
    same = float((timings["screened_ids"] == timings["plain_ids"]).all(axis=1).mean())
    report.add(
        "screened exact search, top-5",
        f"{queries_n:,} x {keys_n:,} x {WIDTH}, vs {backend_note} float32",
        f"{plain_s / timings['screened']:.2f}x the speed",
        f"screened {timings['screened']:.2f} s, plain {plain_s:.2f} s (mean of two runs around it); "
        f"{100 * same:.3f}% identical top-5 lists; {screened.stats.mean_candidates:.1f} keys rescored per query, "
        f"{screened.stats.fallback_groups} fallbacks",
        ok=same >= 0.9999,
    )
    del plain, screened


def check_gradcache(report: Report, preset: str, batch: int, micro: int, device) -> None:
    """CUDA max allocated of one bf16 training step: batch in micro-batches (gradient caching) vs a plain
    step on a micro-batch and on the whole batch (when it fits)."""
    import torch

    from bioclip_cli.models.grad_cache import grad_cache_step
    from bioclip_cli.models.loss import ClipLoss

    cfg, model = full_size_model(preset, device)
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    loss_fn = ClipLoss()
    results = {}
    for name, n, cached in (("plain-m", micro, False), ("cached", batch, True), ("plain-B", batch, False)):
        data = synthetic_batch(n, device)
        try:
            for step in range(2):  # the second step has Adam's state allocated
                torch.cuda.reset_peak_memory_stats()
                _sync()
                t = time.perf_counter()
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    if cached:
                        grad_cache_step(model, data, loss_fn, lambda m=model: m.logit_scale, micro)
                    else:
                        loss_fn(model(data), model.logit_scale).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                _sync()
            results[name] = (torch.cuda.max_memory_allocated() / 2**30, time.perf_counter() - t)
        except torch.cuda.OutOfMemoryError:
            results[name] = (float("nan"), float("nan"))
        del data
        torch.cuda.empty_cache()
    (mem_m, _), (mem_c, t_c), (mem_b, t_b) = results["plain-m"], results["cached"], results["plain-B"]
    report.add(
        "gradient caching, bf16 step",
        f"{preset}, batch {batch} in micro-batches of {micro}",
        f"{mem_c / mem_m:.2f}x the memory of a batch of {micro}",
        f"max allocated: cached {mem_c:.2f} GiB, plain {micro} {mem_m:.2f} GiB, plain {batch} {mem_b:.2f} GiB; "
        f"step {t_c:.2f} s vs plain {batch} {t_b:.2f} s ({t_c / t_b:.2f}x; targets 1.3x memory, 1.4x time)",
        ok=mem_c / mem_m <= 1.3,
    )
    del model, optimizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for all checks (default 420)")
    parser.add_argument("--batch", type=int, default=256, help="training and embedding batch (default 256)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per recipe (default 5)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 5M search shapes (default 1)")
    parser.add_argument("--gc-batch", type=int, default=400, help="gradient-caching batch (default 400, v1)")
    parser.add_argument("--gc-micro", type=int, default=25, help="gradient-caching micro-batch (default 25)")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError as exc:
        print(f"gpu_check: FAILED: torch cannot be imported ({exc}); run it in the project's environment",
              file=sys.stderr)  # fmt: skip
        return 2
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        extra = f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
        print(
            f"gpu_check: FAILED: no CUDA device is available to torch {torch.__version__} "
            f"(built for CUDA {torch.version.cuda or 'none'}{extra}). This check needs a GPU; it does not skip.",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("BIOCLIP_QUIET", "1")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 stays fp32 (as in the evaluation)
    device = torch.device("cuda")
    report = Report(args.budget)
    props = torch.cuda.get_device_properties(device)
    report.add(
        "device", props.name, f"{props.total_memory / 2**30:.0f} GiB",
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, {props.multi_processor_count} SMs",
    )  # fmt: skip
    for preset, recipe in RECIPES:
        report.run(
            "train step, bf16 autocast", f"{preset}, batch {args.batch}", 45,
            lambda p=preset, r=recipe: check_training(report, p, r, args.batch, args.steps, device),
        )  # fmt: skip
    report.run("embedding throughput", "model build", 40, lambda: check_embedding(report, args.batch, device))
    n_q, n_k = (max(TOP_K + 1, int(n * args.scale)) for n in (SEEN + UNSEEN, KEYS))
    report.run("exact search, top-5", f"{n_q:,} x {n_k:,}", 40, lambda: check_search(report, device, n_q, n_k))
    report.run("screened exact search, top-5", f"{n_q:,} x {n_k:,}", 60,
               lambda: check_screened_search(report, device, n_q, n_k))  # fmt: skip
    report.run("gradient caching, bf16 step", f"idt-5m, batch {args.gc_batch}", 60,
               lambda: check_gradcache(report, "idt-5m", args.gc_batch, args.gc_micro, device))  # fmt: skip
    print()
    print(report.table())
    print(f"\n{len(report.rows) - report.failed} passed, {report.failed} failed in {report.elapsed():.0f} s")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
