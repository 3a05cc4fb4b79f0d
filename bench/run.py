"""Run every benchmark of bench/ and write bench/RESULTS.md: machine, each figure with its baseline and ratio.

Each bench runs in its own subprocess (so one that fails or runs out of memory does not stop the others,
and torch thread settings do not leak between them); its `main()` returns a dict of numbers, which this
script turns into rows of one table: the figure, the baseline measured in the same run, their ratio and the
bench's target. Benches:

    data       bench_data.py       dataset items/s vs Pillow decode; DNA tokenizer; build-hdf5 vs file reads
    models     bench_models.py     each full-size encoder's embedding forward (LoRA merged, as `bioclip embed`
                                   runs it) vs the bare transformers model
    retrieval  bench_retrieval.py  faiss exact search at the 5M scale vs torch matmul + top-k; metrics cost
    train      bench_train.py      the training loop vs a bare step on a pre-made batch
    bzsl       bench_bzsl.py       `bioclip zsl`'s tuned BZSL run at INSECT size vs the original algorithm
                                   (dense Cholesky per class and grid point, timed on a few classes, extrapolated)
    demo       (here)              `bioclip demo` end to end vs its 3-minute budget; the gain over the
                                   untrained model; a demo training step on 1 thread vs torch's default

    python bench/run.py                 # full sizes (tens of minutes on 2 cores)
    python bench/run.py --quick         # small sizes, a few minutes: checks that every bench runs
    python bench/run.py --only demo,retrieval --out /tmp/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# area -> (module file, quick arguments, full arguments): a list for main(argv), a dict for main(**kwargs)
BENCHES: dict[str, tuple[str | None, object, object]] = {
    "data": ("bench_data.py", ["--build-rows", "400", "--repeats", "2"], []),
    # LoRA folded into the weights, as every embedding path runs it (`eval.merge_lora`, default true)
    "models": ("bench_models.py", {"batch": 2, "iters": 1, "rounds": 2, "merged": True}, {"merged": True}),
    "retrieval": ("bench_retrieval.py", {"scale": 0.02}, {}),
    "train": ("bench_train.py", ["--only", "tiny", "--steps", "6"], []),
    "gradcache": (
        "bench_gradcache.py",
        {"preset": "tiny", "batch": 32, "micro": 8, "threads": 1},
        {"batch": 16, "micro": 4, "steps": 1, "threads": 1},
    ),
    "bzsl": ("bench_bzsl.py", {"scale": 0.1, "baseline_classes": 4}, {}),
    "demo": (None, {"epochs": 1, "step_rounds": 2}, {}),
}
DEMO_BUDGET_S = 180.0


# ------------------------------------------------------------------------------------------------- demo


def bench_demo(epochs: int | None = None, step_rounds: int = 3, steps: int = 4) -> dict:
    """`run_demo` timed end to end (wall and CPU seconds of this process), and a demo training step on one
    torch thread against torch's default thread count, interleaved."""
    import statistics

    import torch

    from bioclip_cli.pipelines.demo import mean_top1, run_demo
    from bioclip_cli.progress import set_quiet

    set_quiet(True)
    default_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        result = run_demo(Path(tmp) / "demo", epochs=epochs)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        step = {1: [], default_threads: []}
        model, batch, loss_fn, optimizer = _demo_step_parts(result.config)
        for i in range(step_rounds):
            order = [1, default_threads] if i % 2 == 0 else [default_threads, 1]
            for threads in order:
                torch.set_num_threads(threads)
                step[threads].append(_time_steps(model, batch, loss_fn, optimizer, steps))
        torch.set_num_threads(default_threads)
    return {
        "epochs": result.train.epochs,
        "wall_s": wall,
        "cpu_s": cpu,
        "stages_s": result.seconds,
        "budget_s": DEMO_BUDGET_S,
        "image_dna_genus_untrained": mean_top1(result.baseline, "image", "dna", "genus"),
        "image_dna_genus_trained": mean_top1(result.trained, "image", "dna", "genus"),
        "default_threads": default_threads,
        "step_s_1_thread": statistics.median(step[1]),
        "step_s_default_threads": statistics.median(step[default_threads]),
    }


def _demo_step_parts(cfg):
    import torch

    from bioclip_cli.data.datasets import TrainDataset, batch_to_device, collate
    from bioclip_cli.models.build import build_model
    from bioclip_cli.models.loss import ClipLoss

    model = build_model(cfg.model).train()
    data = TrainDataset(cfg.data.hdf5, cfg.data.train_group, cfg.data, modalities=cfg.model.modalities,
                        tokenizer=cfg.model.text.tokenizer, seed=cfg.train.seed)  # fmt: skip
    batch = batch_to_device(collate([data[i] for i in range(cfg.train.batch_size)]), "cpu", cfg.data.image)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
    return model, batch, ClipLoss(), optimizer


def _time_steps(model, batch, loss_fn, optimizer, steps: int) -> float:
    """Seconds per forward + loss + backward + Adam step, after one warm-up step."""
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        loss = loss_fn(model(batch), model.logit_scale)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps


# ------------------------------------------------------------------------------------------ children


def _jsonable(value):
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def run_child(area: str, mode: str, out: Path) -> None:
    """In the subprocess: call the bench's main() with the mode's arguments; write its dict as JSON."""
    module, quick, full = BENCHES[area]
    args = quick if mode == "quick" else full
    if module is None:
        result = bench_demo(**args)
    else:
        sys.path.insert(0, str(HERE))
        import importlib

        main = importlib.import_module(Path(module).stem).main
        params = inspect.signature(main).parameters
        if isinstance(args, list):
            result = main(args) if params else main()
        else:
            result = main(**{k: v for k, v in args.items() if k in params})
    out.write_text(json.dumps(result, default=_jsonable, indent=1))


def run_bench(area: str, mode: str, timeout: float) -> dict:
    """Run one bench in a subprocess: {"result": dict | None, "seconds", "output" (its printed text), "error"}."""
    with tempfile.TemporaryDirectory(prefix=f"bench_{area}_") as tmp:
        out = Path(tmp) / "result.json"
        env = {**os.environ, "BIOCLIP_QUIET": "1", "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "COLUMNS": "160"}
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", area, "--mode", mode, "--child-out", str(out)],
                capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env,
            )  # fmt: skip
            output, code = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            return {"result": None, "seconds": timeout, "output": output, "error": f"timed out after {timeout:.0f} s"}
        seconds = time.perf_counter() - start
        if code != 0 or not out.is_file():
            tail = "\n".join(output.strip().splitlines()[-8:])
            return {"result": None, "seconds": seconds, "output": output, "error": f"exit code {code}: {tail}"}
        return {"result": json.loads(out.read_text()), "seconds": seconds, "output": output, "error": None}


# ------------------------------------------------------------------------------------------- figures


def _row(bench, measure, value, baseline, baseline_is, ratio, ratio_means, target="-", ok=None, unit=""):
    return {"bench": bench, "measure": measure, "value": value, "unit": unit, "baseline": baseline,
            "baseline is": baseline_is, "ratio": ratio, "ratio means": ratio_means, "target": target,
            "ok": "-" if ok is None else ("yes" if ok else "NO")}  # fmt: skip


def rows_data(r: dict) -> list[dict]:
    rows = []
    for measure, d in r.items():
        target = d.get("target")
        ratio = d.get("paired ratio", d.get("ratio"))
        if target is None:
            ok, shown = None, "-"
        elif target <= 1:
            ok, shown = ratio >= target, f"ratio >= {target}"
        else:
            ok, shown = d["value"] >= target, f">= {target:,}"
        means = "value / baseline" + (" (median of back-to-back pairs)" if "paired ratio" in d else "")
        if "paired range" in d:  # timed in several processes: the median over them, and their spread
            means = f"value / baseline (median over processes of back-to-back pairs; {d['paired range']})"
        rows.append(_row("data", measure, d["value"], d["baseline"], d["baseline is"], ratio, means, shown, ok))
    return rows


def rows_models(r: dict) -> list[dict]:
    lora = "LoRA merged" if r.get("merged_lora") else "LoRA unmerged"
    setting = f"batch {r.get('batch')}, {'bf16' if r.get('bf16') else 'fp32'}, {lora}, {r.get('threads')} thread(s)"
    rows = []
    for name in ("image", "dna", "text"):
        if name not in r:
            continue
        d = r[name]
        rows.append(_row("models", f"{name} encoder forward items/s ({setting})", d["ours_items_s"], d["bare_items_s"],
                         "bare transformers model, same architecture", d["speed_ratio"],
                         "bare CPU time / ours, median over rounds", "ratio >= 0.95", d["speed_ratio"] >= 0.95))  # fmt: skip
        rows.append(_row("models", f"{name} encoder forward peak MiB", d["ours_peak_mib"], d["bare_peak_mib"],
                         "bare transformers model", d["memory_ratio"], "ours / bare"))  # fmt: skip
    return rows


def rows_retrieval(r: dict) -> list[dict]:
    scale = f"{r['queries']:,} queries x {r['keys']:,} keys x {r['width']}"
    rows = [
        _row("retrieval", f"faiss exact top-5 search s ({scale})", r["search_s"], r["torch_matmul_topk_s"],
             "torch matmul + topk, same shapes", r["search_vs_torch"], "time ours / baseline (lower is faster)"),
        _row("retrieval", "metrics s (labels + micro/macro top-k + H.M.)", r["metrics_s"], r["search_s"],
             "the search itself", r["metrics_share_of_search"], "metrics / search time", "< 0.10",
             r["metrics_share_of_search"] < 0.10),
        _row("retrieval", "queries with the same top-5 list as torch", r["same_neighbour_lists"], 1.0,
             "all queries", r["same_neighbour_lists"], "share"),
    ]  # fmt: skip
    if "screened_total_s" not in r:
        return rows
    return rows + [
        _row("retrieval", f"screened exact top-5 s, build + search ({scale})", r["screened_total_s"],
             r["build_s"] + r["search_s"], "faiss IndexFlatIP, build + search, same process",
             r["faiss_vs_screened"], "faiss time / screened time (higher is faster)", ">= 1.8",
             r["faiss_vs_screened"] >= 1.8),
        _row("retrieval", "queries with the same top-5 list as faiss (screened)", r["screened_same_lists"], 1.0,
             "all queries", r["screened_same_lists"], "share", "1.0", r["screened_same_lists"] == 1.0),
    ]  # fmt: skip


def rows_gradcache(r: dict) -> list[dict]:
    b, m = r["batch"], r["micro"]
    return [
        _row("gradcache", f"{r['preset']}: peak RSS MiB, batch {b} in micro-batches of {m}", r["cached_peak_rss_mib"],
             r["plain-m_peak_rss_mib"], f"a plain step on a batch of {m}", r["memory_vs_plain_micro"],
             "cached / plain-m", "<= 1.3", r["memory_vs_plain_micro"] <= 1.3),
        _row("gradcache", f"{r['preset']}: step s, batch {b} in micro-batches of {m}", r["cached_step_s"],
             r["plain-B_step_s"], f"a plain step on the batch of {b}", r["time_vs_plain_batch"],
             "cached / plain-B", "<= 1.4", r["time_vs_plain_batch"] <= 1.4),
        _row("gradcache", f"{r['preset']}: activation MiB per sample (derived)", r["activation_mib_per_sample"],
             r["plain-B_peak_rss_mib"], f"peak RSS of the plain batch of {b}", r["memory_vs_plain_batch"],
             "cached / plain-B memory"),
    ]  # fmt: skip


def rows_train(r: dict) -> list[dict]:
    rows = []
    for name, d in r.items():
        ratio = d["loop_samples_per_s"] / d["bare_samples_per_s"]
        rows.append(_row("train", f"{name}: training loop samples/s (batch {d['batch']})", d["loop_samples_per_s"],
                         d["bare_samples_per_s"], "bare step on a pre-made batch", ratio,
                         f"loop / bare (overhead {100 * d['overhead']:+.1f}%)", "overhead < 15%",
                         d["overhead"] < 0.15))  # fmt: skip
    return rows


def rows_demo(r: dict) -> list[dict]:
    return [
        _row("demo", f"bioclip demo end to end, s ({r['epochs']} epochs, 1 torch thread)", r["wall_s"], r["budget_s"],
             "the 3-minute budget", r["wall_s"] / r["budget_s"], "wall time / budget", "<= 1",
             r["wall_s"] <= r["budget_s"]),
        _row("demo", "  the same, CPU seconds of the process", r["cpu_s"], r["budget_s"], "the 3-minute budget",
             r["cpu_s"] / r["budget_s"], "CPU time / budget (what an idle core would take)"),
        _row("demo", "image->DNA genus micro top-1, mean of seen/unseen", r["image_dna_genus_trained"],
             r["image_dna_genus_untrained"], "the untrained model (same architecture, seeded)",
             r["image_dna_genus_trained"] - r["image_dna_genus_untrained"], "difference (trained - untrained)", "> 0",
             r["image_dna_genus_trained"] > r["image_dna_genus_untrained"]),
        _row("demo", "demo training step s, 1 torch thread", r["step_s_1_thread"], r["step_s_default_threads"],
             f"torch's default ({r['default_threads']} threads)", r["step_s_1_thread"] / r["step_s_default_threads"],
             "time 1 thread / default (lower: 1 thread is faster)"),
    ]  # fmt: skip


def rows_bzsl(r: dict) -> list[dict]:
    scale = f"{r['rows']:,} rows, {r['classes']:,} classes, d={r['pca_dim']}, {r['grid_points']} grid points"
    return [
        _row("bzsl", f"tuned BZSL run s ({scale})", r["ours_tuned_run_s"], r["baseline_extrapolated_s"],
             "original algorithm (dense Cholesky per class and point), extrapolated from a few classes",
             r["ours_tuned_run_s"] / r["baseline_extrapolated_s"], "time ours / baseline (lower is faster)",
             "< 600 s", r["ours_tuned_run_s"] < 600),
        _row("bzsl", "log-densities, max relative difference to the baseline", r["max_relative_difference"], None,
             "-", None, "-", "< 1e-9", r["max_relative_difference"] < 1e-9),
    ]  # fmt: skip


ADAPTERS = {"data": rows_data, "models": rows_models, "retrieval": rows_retrieval, "train": rows_train,
            "gradcache": rows_gradcache, "demo": rows_demo, "bzsl": rows_bzsl}  # fmt: skip


def rows_raw(area: str, result: dict, prefix: str = "") -> list[dict]:
    """Numbers of a result whose layout this script does not know, without baseline (flagged as such)."""
    rows = []
    for key, value in result.items():
        if isinstance(value, dict):
            rows += rows_raw(area, value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append(_row(area, f"{prefix}{key}", value, None, "(layout not recognised by run.py)", None, "-"))
    return rows


# -------------------------------------------------------------------------------------------- report


def machine_info() -> dict:
    info = {
        "date (UTC)": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus (usable / total)": f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} / "
        f"{os.cpu_count()}",
    }
    try:
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        info["cpu"] = names[0] if names else platform.processor()
        mem = next(ln for ln in open("/proc/meminfo") if ln.startswith("MemTotal"))
        info["memory"] = f"{int(mem.split()[1]) / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    try:
        import torch

        info["torch"] = f"{torch.__version__} ({torch.get_num_threads()} intra-op threads by default)"
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        info["torch"] = "not installed"
    for name in ("numpy", "faiss", "transformers", "h5py"):
        try:
            info[name] = __import__(name).__version__
        except (ImportError, AttributeError):
            info[name] = "not installed"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=REPO)
        info["commit"] = commit.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")
    except OSError:
        info["commit"] = "unknown"
    return info


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "/")


def render(mode: str, info: dict, load: dict, runs: dict[str, dict], rows: list[dict]) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `python bench/run.py{' --quick' if mode == 'quick' else ''}` ({mode} sizes). Every figure "
        "is shown with the baseline measured in the same run, on the same machine, and their ratio. Do not edit "
        "by hand: rerun the script.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {_fmt(v)} |" for k, v in info.items()),
        f"| load average (1 min) before / after | {load['before']:.2f} / {load['after']:.2f} |",
        "",
        "A load average above the number of CPUs means other jobs shared the machine: wall-clock figures are then "
        "slower than on an idle machine; the benches that can measure CPU time of their own process say so.",
        "",
        "## Figures",
        "",
        "| bench | measure | value | baseline | baseline is | ratio | ratio means | target | ok |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['bench']} | {_fmt(r['measure'])} | {_fmt(r['value'])} | {_fmt(r['baseline'])} | "
            f"{_fmt(r['baseline is'])} | {_fmt(r['ratio'])} | {_fmt(r['ratio means'])} | {_fmt(r['target'])} | "
            f"{r['ok']} |"
        )
    lines += ["", "## Runs", "", "| bench | seconds | status |", "|---|---|---|"]
    for area, run in runs.items():
        status = "ok" if run["error"] is None else f"FAILED: {run['error'].splitlines()[0][:200]}"
        lines.append(f"| {area} | {run['seconds']:.0f} | {_fmt(status)} |")
    for area, run in runs.items():
        lines += ["", f"<details><summary>{area}: output and raw numbers</summary>", "", "```text"]
        lines += [run["output"].rstrip()[-6000:] or "(no output)", "```", ""]
        if run["result"] is not None:
            lines += ["```json", json.dumps(run["result"], indent=1, default=str)[:8000], "```"]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def figures(area: str, result: dict) -> list[dict]:
    try:
        return ADAPTERS[area](result)
    except (KeyError, TypeError, ZeroDivisionError):
        return rows_raw(area, result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: check that every bench runs")
    parser.add_argument("--only", help=f"comma-separated benches (default all: {', '.join(BENCHES)})")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="report file (default bench/RESULTS.md)")
    parser.add_argument("--timeout", type=float, help="seconds per bench (default 900 quick, 5400 full)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child, args.mode, args.child_out)
        return 0
    mode = "quick" if args.quick else "full"
    areas = [a.strip() for a in args.only.split(",")] if args.only else list(BENCHES)
    unknown = [a for a in areas if a not in BENCHES]
    if unknown:
        parser.error(f"unknown bench(es) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    timeout = args.timeout or (900.0 if args.quick else 5400.0)
    load = {"before": os.getloadavg()[0]}
    runs, rows = {}, []
    for area in areas:
        print(f"[run.py] {area} ({mode}) ...", flush=True)
        run = run_bench(area, mode, timeout)
        runs[area] = run
        if run["result"] is not None:
            rows += figures(area, run["result"])
        print(
            f"[run.py] {area}: {'ok' if run['error'] is None else run['error']} in {run['seconds']:.0f} s", flush=True
        )
    load["after"] = os.getloadavg()[0]
    args.out.write_text(render(mode, machine_info(), load, runs, rows))
    failed = [a for a, r in runs.items() if r["error"] is not None]
    print(f"[run.py] wrote {args.out}: {len(rows)} figures; failed benches: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
