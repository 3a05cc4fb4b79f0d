"""Training curves from `metrics.jsonl` records: loss, learning rate, temperature, per-epoch accuracy.

`train` records carry `step`, `loss`, `lr` and `logit_scale` (s in s * A.B^T; the temperature is 1/s);
`eval` records carry `epoch` and the evaluation `results` (micro top-1 per level, seen and unseen). Several
runs share the axes, one colour per run; seen accuracy is drawn solid, unseen dashed.
"""

from __future__ import annotations

from collections.abc import Sequence

from bioclip_cli.figures.style import colour, new_figure, styled

SPLIT_STYLES = {"seen": "-", "unseen": "--"}
LEVEL_MARKERS = ("o", "s", "^", "D")


def curve_series(records: Sequence[dict], combo: str, levels: Sequence[str]) -> dict:
    """The drawn data of one run: {"step", "loss", "lr", "temperature", "epoch", "accuracy": {split: {level: [...]}}}."""
    train = [r for r in records if r.get("type") == "train"]
    evals = [r for r in records if r.get("type") == "eval" and combo in r.get("results", {})]
    accuracy: dict[str, dict[str, list]] = {}
    for split in SPLIT_STYLES:
        if evals and split in evals[0]["results"][combo]:
            accuracy[split] = {
                lv: [float(r["results"][combo][split]["micro"]["1"][lv]) for r in evals] for lv in levels
            }
    return {
        "step": [int(r["step"]) for r in train],
        "loss": [float(r["loss"]) for r in train],
        "lr": [float(r["lr"]) for r in train],
        "temperature": [1.0 / float(r["logit_scale"]) for r in train if r.get("logit_scale")],
        "epoch": [r["epoch"] for r in evals],
        "accuracy": accuracy,
    }


def draw_curves(series: dict[str, dict], *, combo: str, size: str, title: str):
    """2 x 2 panels (loss, learning rate, temperature, top-1 accuracy) for the runs in `series` (name -> data)."""
    with styled(size):
        fig = new_figure(size, 0.85 if size == "column" else 0.6)
        (ax_loss, ax_lr), (ax_t, ax_acc) = fig.subplots(2, 2)
        for i, (name, s) in enumerate(series.items()):
            c = colour(i)
            ax_loss.plot(s["step"], s["loss"], color=c, label=name)
            ax_lr.plot(s["step"], s["lr"], color=c)
            if s["temperature"]:
                ax_t.plot(s["step"][: len(s["temperature"])], s["temperature"], color=c)
            for split, per_level in s["accuracy"].items():
                for j, (level, values) in enumerate(per_level.items()):
                    ax_acc.plot(
                        s["epoch"], [100 * v for v in values], color=c, linestyle=SPLIT_STYLES[split],
                        marker=LEVEL_MARKERS[j % len(LEVEL_MARKERS)], markersize=3,
                        label=f"{level}, {split}" if i == 0 else None,
                    )  # fmt: skip
        ax_loss.set(title="training loss", xlabel="step")
        ax_lr.set(title="learning rate", xlabel="step")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax_t.set(title="temperature (1 / logit scale)", xlabel="step")
        ax_acc.set(title=f"{combo.replace('|', ' -> ')} micro top-1 (%)", xlabel="epoch")
        if len(series) > 1:
            ax_loss.legend(frameon=False)
        if ax_acc.get_legend_handles_labels()[0]:
            ax_acc.legend(frameon=False)
        fig.suptitle(title)
    return fig
