"""`bioclip eval`: the paper's retrieval metrics on our or the released embedding files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from bioclip_cli.cli.options import (
    CsvOpt,
    FormatOpt,
    JsonOpt,
    OutputOpt,
    RunOpt,
    SplitOpt,
    complete_device,
    examples,
)

EXAMPLES = examples(
    "bioclip eval --run runs/idt-5m --query image --key dna",
    "bioclip eval --embeddings extracted_feature_from_val_split.hdf5 --labels labels_val.json --json results.json",
    "bioclip eval --run runs/demo --k 1,5 --levels genus,species --csv results.csv",
    "bioclip eval --run runs/idt-5m --per-class per_class.csv",
    "bioclip eval --run runs/demo --format json | jq '.results'",
    "bioclip eval --run runs/idt-1m --hybrid one --format json   # seen image keys, else unseen DNA keys",
    "bioclip eval --run runs/idt-1m --hybrid two --tau 0.5       # after bioclip finetune-classifier",
)


def _complete_query(incomplete: str) -> list[str]:
    from bioclip_cli.retrieval.evaluation import QUERY_FEATURES

    return [name for name in QUERY_FEATURES if name.startswith(incomplete)]


def _complete_key(incomplete: str) -> list[str]:
    from bioclip_cli.retrieval.evaluation import KEY_FEATURES

    return [name for name in KEY_FEATURES if name.startswith(incomplete)]


def _int_list(text: str, flag: str) -> list[int]:
    from bioclip_cli.errors import BioclipError

    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise BioclipError(f"{flag} {text!r} is not a comma-separated list of positive integers", f"e.g. {flag} 1,3,5")
    return values


def command(
    run: RunOpt = None,
    embeddings: Annotated[
        Path | None, typer.Option("--embeddings", help="extracted_feature_from_*_split.hdf5", show_default=False)
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="labels_*.json beside the embeddings.", show_default=False)
    ] = None,
    split: SplitOpt = "val",
    query: Annotated[
        list[str] | None,
        typer.Option(
            "--query",
            help="Query feature(s): image, dna, text, avg, concat.",
            show_default=False,
            autocompletion=_complete_query,
        ),
    ] = None,
    key: Annotated[
        list[str] | None,
        typer.Option(
            "--key",
            help="Key feature(s): image, dna, text, avg, concat, all.",
            show_default=False,
            autocompletion=_complete_key,
        ),
    ] = None,
    k: Annotated[str, typer.Option("--k", help="Comma-separated k of top-k.")] = "1,3,5",
    levels: Annotated[
        str, typer.Option("--levels", help="Comma-separated taxonomic levels.")
    ] = "order,family,genus,species",
    json_out: JsonOpt = None,
    csv_out: CsvOpt = None,
    per_class: Annotated[
        Path | None,
        typer.Option("--per-class", help="Also write per-class accuracy and counts as CSV.", show_default=False),
    ] = None,
    index: Annotated[
        Literal["flat", "ivf"],
        typer.Option("--index", help="flat: exact search (the paper's); ivf: approximate, reports its recall@k."),
    ] = "flat",
    device: Annotated[
        str,
        typer.Option(
            "--device",
            help="Search on: auto (faiss-gpu, else torch on CUDA, else faiss CPU), cpu, cuda, cuda:N, mps.",
            autocompletion=complete_device,
        ),
    ] = "auto",
    search: Annotated[
        Literal["screened", "exact"],
        typer.Option(
            "--search",
            help="Exact search by a bf16 screen + faiss rescoring (screened: the same lists, faster on CPU; "
            "docs/lowp_search.md) or plain faiss float32 (exact).",
        ),
    ] = "screened",
    format: FormatOpt = "table",
    output_file: OutputOpt = None,
    hybrid: Annotated[
        Literal["one", "two"] | None,
        typer.Option(
            "--hybrid",
            help="The hybrid seen/unseen rule: one (seen image keys, cosine) or two (the run's classifier, "
            "softmax), else image->DNA against the unseen species' keys; tau chosen on val, applied to test.",
            show_default=False,
        ),
    ] = None,
    tau: Annotated[
        float | None,
        typer.Option("--tau", help="With --hybrid: a fixed tau instead of the validation grid's.", show_default=False),
    ] = None,
) -> None:
    """Micro and macro top-k accuracy per level, seen and unseen, and their harmonic mean.

    --format json prints the results object (the one --json writes), --format csv the table's rows as
    fractions (the ones --csv writes); --json FILE and --csv FILE write them beside the printed table.
    """
    from bioclip_cli.cli import output

    output.check_outputs(json_out, csv_out, per_class, output_file)
    ks = _int_list(k, "--k")
    level_list = [part.strip() for part in levels.split(",") if part.strip()]
    if hybrid is not None or tau is not None:
        _hybrid(run, embeddings, hybrid, tau, ks, level_list, device, format, output_file, json_out, csv_out)
        return
    from bioclip_cli.workflows.evaluate import evaluate_run, run_results_path

    result = evaluate_run(
        run, embeddings, labels, split=split, queries=query, keys=key, ks=ks, levels=level_list,
        index=index, device=device, per_class=per_class is not None, search=search,
    )  # fmt: skip

    shown = [
        {c.replace(" ", "\n"): f"{v:5.1f}" if isinstance(v, float) else v for c, v in row.items()}
        for row in result.rows(percent=True)
    ]
    n = result.n_queries
    source = run if run is not None else embeddings
    results = result.to_json(per_class=False)
    output.emit(
        result.rows(),
        format,
        output_file,
        title=f"Top-k accuracy (%) — {source}: {n['seen']} seen, {n['unseen']} unseen queries, {result.n_keys} keys",
        json_obj=results,
        table_rows=shown,
    )
    for note in result.notes:
        output.warning(note)
    if result.search is not None:
        s = result.search
        worst = min(s.recall_at_k.values())
        output.info(f"ivf index: {s.nlist} lists, nprobe {s.nprobe}; recall@{result.k[-1]} vs exact "
                    f"on {s.recall_sample} queries: lowest {worst:.3f} over the pairs (see --json)")  # fmt: skip
    if json_out:
        output.write_json(json_out, results)
    if csv_out:
        output.write_csv(csv_out, result.rows())
    if per_class is not None:
        output.write_csv(per_class, result.per_class)
    if run is not None:
        output.success(f"saved {run_results_path(run, split)}")


def _hybrid(run, embeddings, method, tau, ks, levels, device, format, output_file, json_out, csv_out) -> None:
    """`--hybrid one|two`: the hybrid rules on a run (workflows/hybrid_eval.py), shown like the evaluation."""
    from bioclip_cli.cli import output
    from bioclip_cli.errors import BioclipError
    from bioclip_cli.retrieval.eval_result import json_rows
    from bioclip_cli.workflows.hybrid_eval import evaluate_hybrid_run, hybrid_results_path

    if method is None:
        raise BioclipError("--tau needs --hybrid one or --hybrid two", "bioclip eval --run RUN --hybrid one --tau 0.5")
    if run is None or embeddings is not None:
        raise BioclipError("--hybrid evaluates a run: give --run runs/NAME (not --embeddings)",
                           "bioclip eval --run runs/demo --hybrid one")  # fmt: skip
    result = evaluate_hybrid_run(run, method, tau=tau, ks=ks, levels=levels, device=device)
    h, n = result["hybrid"], result["n_queries"]
    shown = [
        {c.replace(" ", "\n"): f"{v:5.1f}" if isinstance(v, float) else v for c, v in row.items()}
        for row in json_rows(result, percent=True)
    ]
    title = (f"Hybrid method {method} (%) — {run}, {h['applied_to']}: {n['seen']} seen, {n['unseen']} unseen "
             f"queries; tau {h['tau']:.4f} ({'fixed' if tau is not None else 'from val'})")  # fmt: skip
    output.emit(json_rows(result), format, output_file, title=title, json_obj=result, table_rows=shown)
    for note in result.get("notes", []):
        output.warning(note)
    output.info(f"tau = {h['tau']:.6f}; validation grid ({h['grid_points']} points): best H of micro top-1 species "
                f"{h['val_best_harmonic_mean']:.4f} at tau {h['val_best_tau']:.6f}")  # fmt: skip
    if json_out:
        output.write_json(json_out, result)
    if csv_out:
        output.write_csv(csv_out, json_rows(result))
    output.success(f"saved {hybrid_results_path(run, method)}")
