"""`bioclip eval --hybrid one|two`: the original's hybrid seen/unseen rules on a run (docs/method.md, "Hybrid seen/unseen rules").

Inputs, from the run's HDF5 (`data.hdf5`) and its `checkpoints/best` (or `last`):

- queries: the image embeddings of the validation seen/unseen groups (`data.val_groups`), and of the test
  groups (`data.test_groups`) when the file has them;
- list A, method one: image->image search against the image embeddings of `seen_keys`; method two: the
  classifier of `bioclip finetune-classifier` (`RUN/classifier/checkpoints/best`) on the query images, its
  top-K classes with their softmax probabilities;
- list B: image->DNA search against the DNA embeddings of the unseen species' keys: `unseen_keys`
  (BIOSCAN-5M layout and the bundled sample) or `val_unseen_keys` + `test_unseen_keys` (BIOSCAN-1M).

These groups are not in the run's exported embedding files (those hold the seen/unseen queries and
`all_keys`), so this workflow embeds what it needs itself, with the run's model
(:func:`~bioclip_cli.models.encode.encode_group`, the same engine as `bioclip embed`), on every call;
nothing is cached. tau is chosen on validation and applied to test (:mod:`bioclip_cli.retrieval.hybrid`);
without test groups it is applied to validation itself, and the result says so. The result is saved as
`RUN/results/hybrid_{method}.json`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bioclip_cli.atomic_write import write_text
from bioclip_cli.config import load_run_config
from bioclip_cli.config.schema import LEVELS
from bioclip_cli.errors import BioclipError, ConfigError, DataError
from bioclip_cli.retrieval.hybrid import METHODS, RankedLists, evaluate_hybrid
from bioclip_cli.runs.run_dir import RunDir, resolve_run, run_checkpoint

SEEN_KEYS = "seen_keys"
UNSEEN_KEYS = (("unseen_keys",), ("val_unseen_keys", "test_unseen_keys"))  # 5M/sample layout, then 1M


def hybrid_results_path(run: str | Path, method: str) -> Path:
    return Path(run) / "results" / f"hybrid_{method}.json"


def classifier_checkpoint(run_root: Path) -> Path:
    """`RUN/classifier/checkpoints/best`, made by `bioclip finetune-classifier`."""
    return RunDir(run_root / "classifier").best


def _unseen_key_groups(h5) -> list[str]:
    for groups in UNSEEN_KEYS:
        if all(h5.has_group(g) for g in groups):
            return list(groups)
    raise DataError(h5.path, f"{h5.path} has no unseen-species key groups ({' or '.join(' + '.join(g) for g in UNSEEN_KEYS)})",
                    "the hybrid rules need the published partition's key groups (bioclip build-hdf5)")  # fmt: skip


def _labels_at(labels: dict[str, np.ndarray], idx: np.ndarray, levels) -> dict[str, np.ndarray]:
    return {lv: np.asarray(labels[lv]).astype(str)[idx] for lv in levels}


def evaluate_hybrid_run(
    run: str | Path,
    method: str,
    *,
    tau: float | None = None,
    ks: Sequence[int] = (1, 3, 5),
    levels: Sequence[str] = LEVELS,
    device: str = "auto",
    which: str = "best",
    batch_size: int | None = None,
) -> dict:
    """Method one or two on run `run` (see the module docstring); returns and saves the hybrid result."""
    if method not in METHODS:
        raise BioclipError(f"--hybrid must be one or two, got {method!r}")
    if tau is not None and not 0.0 <= tau <= 1.0:
        raise BioclipError(f"--tau must be in [0, 1], got {tau}")
    ks = sorted({int(k) for k in ks})
    levels = list(levels)
    rd = resolve_run(run)
    cfg = load_run_config(rd.config)
    checkpoint = run_checkpoint(rd, which)
    for modality in ("image", "dna"):
        if modality not in cfg.model.modalities:
            raise ConfigError("model.modalities", f"the hybrid rules need image and DNA encoders; {rd.root} has "
                              f"{', '.join(cfg.model.modalities)}")  # fmt: skip
    clf_dir = classifier_checkpoint(rd.root)
    if method == "two" and not (clf_dir / "model.safetensors").is_file():
        raise DataError(clf_dir, f"{rd.root} has no classifier for method two ({clf_dir} is missing)",
                        f"train it first: bioclip finetune-classifier --run {rd.root}")  # fmt: skip

    import torch

    from bioclip_cli.data.datasets import EvalDataset
    from bioclip_cli.data.hdf5 import BioscanH5
    from bioclip_cli.models.encode import build_embedding_model, encode_group, encode_rows
    from bioclip_cli.retrieval.search import FlatIndex
    from bioclip_cli.runs.accelerator import make_accelerator

    with BioscanH5(cfg.data.hdf5) as h5:
        unseen_keys = _unseen_key_groups(h5)
        needed = [*cfg.data.val_groups, *unseen_keys] + ([SEEN_KEYS] if method == "one" else [])
        for group in needed:
            h5.group(group)  # DataError naming the groups that exist
        has_test = all(h5.has_group(g) for g in cfg.data.test_groups)
    query_groups = {"val": dict(zip(("seen", "unseen"), cfg.data.val_groups))}
    if has_test:
        query_groups["test"] = dict(zip(("seen", "unseen"), cfg.data.test_groups))

    accelerator = make_accelerator()
    dev = accelerator.device
    batch = batch_size or cfg.eval.batch_size
    model = build_embedding_model(cfg, checkpoint).to(dev)

    def embed(group: str, modality: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        ds = EvalDataset(cfg.data.hdf5, group, cfg.data, modalities=[modality], tokenizer=cfg.model.text.tokenizer)
        feats = encode_group(model, ds, device=dev, batch_size=batch, autocast=cfg.eval.autocast,
                             accelerator=accelerator, merge_lora=cfg.eval.merge_lora)  # fmt: skip
        return feats[modality], ds.labels

    k = ks[-1]
    queries = {s: {r: embed(g, "image") for r, g in groups.items()} for s, groups in query_groups.items()}
    parts = [embed(g, "dna") for g in unseen_keys]
    dna_keys = np.concatenate([p[0] for p in parts])
    dna_labels = {lv: np.concatenate([np.asarray(p[1][lv]).astype(str) for p in parts]) for lv in levels}
    if len(dna_keys) < k:
        raise DataError(
            cfg.data.hdf5, f"top-{k} needs at least {k} unseen keys; {' + '.join(unseen_keys)} has {len(dna_keys)}"
        )
    b_index = FlatIndex(dna_keys, device=device)
    n_keys = {"unseen": len(dna_keys)}
    if method == "one":
        seen_feats, seen_labels = embed(SEEN_KEYS, "image")
        a_index = FlatIndex(seen_feats, device=device)
        n_keys["seen"] = len(seen_feats)

        def list_a(feats, _group):
            scores, idx = a_index.search(feats, k)
            return scores, _labels_at(seen_labels, idx, levels)
    else:
        from bioclip_cli.models.classifier import load_classifier

        classifier = load_classifier(clf_dir, build_embedding_model(cfg, checkpoint)).to(dev)
        class_tax = {lv: np.asarray(classifier.taxonomy[lv]) for lv in levels}
        n_keys["classes"] = len(classifier.classes)
        if len(classifier.classes) < k:
            raise DataError(
                clf_dir, f"top-{k} needs at least {k} classes; the classifier has {len(classifier.classes)}"
            )

        def list_a(_feats, group):
            ds = EvalDataset(cfg.data.hdf5, group, cfg.data, modalities=["image"])
            logits = np.concatenate([f["image"] for _, f in encode_rows(classifier, ds, device=dev, batch_size=batch,
                                                                        accelerator=accelerator)])  # fmt: skip
            probs = torch.softmax(torch.from_numpy(logits).double(), dim=1)
            scores, idx = torch.topk(probs, k, dim=1)  # ties: torch's order
            return scores.numpy(), {lv: class_tax[lv][idx.numpy()] for lv in levels}

    lists = {}
    for split, roles in queries.items():
        lists[split] = {}
        for role, (feats, labels) in roles.items():
            scores, a_labels = list_a(feats, query_groups[split][role])
            _, b_idx = b_index.search(feats, k)
            lists[split][role] = RankedLists(scores, a_labels, _labels_at(dna_labels, b_idx, levels),
                                             {lv: labels[lv] for lv in levels})  # fmt: skip
    result = evaluate_hybrid(method, lists["val"], lists.get("test"), tau=tau, ks=ks, levels=levels)
    result["n_keys"] = n_keys
    result["inputs"] = {
        "run": str(rd.root), "checkpoint": str(checkpoint), "hdf5": str(cfg.data.hdf5),
        "queries": query_groups, "seen_keys": SEEN_KEYS if method == "one" else None,
        "classifier": str(clf_dir) if method == "two" else None, "unseen_keys": unseen_keys,
        "embedded": "by this call, with the run's model (the key groups are not in the exported files)",
    }  # fmt: skip
    if not has_test:
        result["notes"] = [f"{cfg.data.hdf5} has no test groups ({', '.join(cfg.data.test_groups)}): "
                           "tau was chosen on validation and the accuracies are of validation too"]  # fmt: skip
    if accelerator.is_main_process:
        write_text(hybrid_results_path(rd.root, method), json.dumps(result, indent=2) + "\n")
    return result
