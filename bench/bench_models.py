"""Embedding forward of each encoder at the paper sizes (idt-5m, random weights) vs the bare transformers model.

For each encoder, the same batch goes through (a) our wrapper's `encode_*` (backbone with its peft LoRA
adapters as the preset builds them, pooling, head, L2 norm) and (b) a bare transformers model of the same
architecture (`ViTModel` / `BertModel`, no adapters, no head). Both run in eval mode under
`torch.inference_mode` (optionally bf16 autocast), interleaved round by round with alternating order;
items/s come from each side's best round (wall clock); the speed ratio is the median of the per-round
ratios of process CPU time (robust to a shared, noisy CPU). Peak memory: each side runs in a fresh subprocess that samples, every millisecond
during one forward (after a warm-up), the heap bytes in use (glibc mallinfo2) above what the built model holds.
Target: ours within 5% of the bare forward (ratio >= 0.95 in items/s).

    python bench/bench_models.py                      # batch 8, 1 thread, fp32
    python bench/bench_models.py --bf16 --merged      # bf16 autocast; LoRA folded into the weights
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import statistics
import subprocess
import sys
import threading
import time

ENCODERS = ("image", "dna", "text")


def _inputs(name: str, batch: int):
    import torch

    g = torch.Generator().manual_seed(0)
    if name == "image":
        return {"pixels": torch.rand(batch, 3, 224, 224, generator=g)}
    if name == "dna":
        ids = torch.randint(3, 1027, (batch, 133), generator=g)
        ids[:, 0] = 0
        return {"ids": ids, "mask": torch.ones(batch, 133, dtype=torch.long)}
    ids = torch.randint(1000, 30522, (batch, 20), generator=g)
    mask = torch.ones(batch, 20, dtype=torch.long)
    mask[:, 12:] = 0
    return {"ids": ids * mask, "mask": mask, "type_ids": torch.zeros(batch, 20, dtype=torch.long)}


def _ours(name: str):
    """Our model with only this encoder (idt-5m shapes, LoRA as the preset builds it) and its forward."""
    from dataclasses import replace

    from bioclip_cli.config import load_config
    from bioclip_cli.models import build_model

    cfg = load_config("idt-5m").model
    model = build_model(replace(cfg, modalities=[name]), pretrained=False).eval()
    encode = {"image": model.encode_image, "dna": model.encode_dna, "text": model.encode_text}[name]
    return model, lambda x: encode(*x.values())


def _bare(name: str):
    """The bare transformers model of the same architecture and its forward on the same inputs."""
    from transformers import BertModel, ViTModel

    from bioclip_cli.config import load_config
    from bioclip_cli.models.dna import dna_bert_config
    from bioclip_cli.models.image import vit_config
    from bioclip_cli.models.text import text_bert_config

    cfg = load_config("idt-5m").model
    if name == "image":
        model = ViTModel(vit_config(cfg.image), add_pooling_layer=False).eval()
        return model, lambda x: model(pixel_values=x["pixels"]).last_hidden_state
    if name == "dna":
        model = BertModel(dna_bert_config(cfg.dna), add_pooling_layer=False).eval()
        return model, lambda x: model(input_ids=x["ids"]).last_hidden_state
    model = BertModel(text_bert_config(cfg.text), add_pooling_layer=False).eval()
    return (
        model,
        lambda x: model(input_ids=x["ids"], attention_mask=x["mask"], token_type_ids=x["type_ids"]).last_hidden_state,
    )


def _context(bf16: bool):
    import contextlib

    import torch

    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    if bf16:
        stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
    return stack


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _heap_meter():
    """Bytes of heap in use now: glibc mallinfo2 (allocated chunks + mmapped blocks, all arenas), which freed
    but cached memory does not inflate; the resident set size where glibc is not available."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2

        def in_use() -> int:
            info = libc.mallinfo2()
            return info.uordblks + info.hblkhd

        return in_use, "heap in use (mallinfo2)"
    except (OSError, AttributeError):

        def rss() -> int:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096

        return rss, "resident set"


def _child(name: str, side: str, batch: int, bf16: bool, merged: bool, threads: int) -> dict:
    """Run in a fresh process: build one side, warm up, then sample the heap in use over a few forwards."""
    import contextlib
    import gc

    import torch

    torch.set_num_threads(threads)
    model, forward = (_ours if side == "ours" else _bare)(name)
    x = _inputs(name, batch)
    merge = model.lora_merged() if side == "ours" and merged else contextlib.nullcontext()
    with merge:
        meter, _ = _heap_meter()
        with _context(bf16):
            forward(x)  # warm-up: lazily built buffers are not the forward's peak
        gc.collect()
        base = meter()
        peak = [base]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], meter())
                time.sleep(0.001)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        with _context(bf16):
            for _ in range(5):  # repeated, so that 1 ms sampling catches short-lived peaks
                forward(x)
        stop.set()
        thread.join()
    return {"peak_mib": (peak[0] - base) / 2**20, "meter": _heap_meter()[1]}


def _peak_memory(name: str, side: str, batch: int, bf16: bool, merged: bool, threads: int) -> float:
    args = [sys.executable, __file__, "--child", name, side, "--batch", str(batch), "--threads", str(threads)]
    args += ["--bf16"] * bf16 + ["--merged"] * merged
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]


def _time(forward, x, iters: int, bf16: bool) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per forward."""
    with _context(bf16):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(iters):
            forward(x)
        return (time.perf_counter() - wall) / iters, (time.process_time() - cpu) / iters


def main(
    batch: int = 8, iters: int = 2, rounds: int = 8, bf16: bool = False, merged: bool = False, threads: int = 1
) -> dict:
    import contextlib

    import torch

    torch.set_num_threads(threads)
    results: dict = {"batch": batch, "bf16": bf16, "merged_lora": merged, "threads": threads}
    rows = []
    for name in ENCODERS:
        ours_model, ours = _ours(name)
        _, bare = _bare(name)
        x = _inputs(name, batch)
        merge = ours_model.lora_merged() if merged else contextlib.nullcontext()
        with merge:
            _time(ours, x, 1, bf16)  # warm-up
            per_forward, _ = _time(bare, x, 1, bf16)
            n = max(iters, math.ceil(0.5 / per_forward))  # at least ~0.5 s per measurement
            t_ours, t_bare = [], []
            for i in range(rounds):  # alternate which side goes first; the CPU may be shared
                sides = [(t_ours, ours), (t_bare, bare)]
                for times, forward in sides if i % 2 == 0 else sides[::-1]:
                    times.append(_time(forward, x, n, bf16))
        # CPU seconds, not wall time: on a shared machine waiting for a core is not the model's cost
        ratios = [b[1] / o[1] for o, b in zip(t_ours, t_bare, strict=True)]
        ours_s, bare_s = min(t[0] for t in t_ours), min(t[0] for t in t_bare)
        mem_ours = _peak_memory(name, "ours", batch, bf16, merged, threads)
        mem_bare = _peak_memory(name, "bare", batch, bf16, merged, threads)
        row = {
            "encoder": name,
            "ours_items_s": batch / ours_s,
            "bare_items_s": batch / bare_s,
            "speed_ratio": statistics.median(ratios),  # per-round bare/ours CPU time, median over rounds
            "ours_peak_mib": mem_ours,
            "bare_peak_mib": mem_bare,
            "memory_ratio": mem_ours / mem_bare if mem_bare > 0 else float("nan"),
        }
        rows.append(row)
        results[name] = row
        del ours_model
    print(
        f"batch {batch}, {'bf16 autocast' if bf16 else 'fp32'}, LoRA {'merged' if merged else 'unmerged'}, "
        f"{threads} thread(s), {rounds} rounds x {iters} forwards (items/s: best round; speed: median per-round CPU-time ratio)"
    )
    print(
        f"{'encoder':8} {'ours it/s':>10} {'bare it/s':>10} {'speed':>7} {'ours MiB':>9} {'bare MiB':>9} {'memory':>7}"
    )
    for r in rows:
        print(
            f"{r['encoder']:8} {r['ours_items_s']:10.2f} {r['bare_items_s']:10.2f} {r['speed_ratio']:7.3f} "
            f"{r['ours_peak_mib']:9.1f} {r['bare_peak_mib']:9.1f} {r['memory_ratio']:7.3f}"
        )
    return results


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--merged", action="store_true", help="fold LoRA into the base weights (lora_merged)")
    parser.add_argument("--child", nargs=2, metavar=("ENCODER", "SIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        out = _child(*args.child, args.batch, args.bf16, args.merged, args.threads)
        print(json.dumps(out))
        return
    main(args.batch, args.iters, args.rounds, args.bf16, args.merged, args.threads)


if __name__ == "__main__":
    _cli()
