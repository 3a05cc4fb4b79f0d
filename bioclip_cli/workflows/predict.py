"""`bioclip predict`: identify new specimens by their nearest reference specimens in a run's key embeddings.

Inputs are photographs, DNA barcodes, or both (paired in order: the i-th barcode belongs to the i-th
photograph). They are prepared exactly as the evaluation prepares its queries, with the run's own settings:
images through :class:`~bioclip_cli.data.images.EvalTransform` (`data.image`), barcodes through
:func:`~bioclip_cli.data.dna.kmer_tokenize` (`data.dna`) after whitespace is removed and letters are
upper-cased. The run's model (its `config.yaml` + `checkpoints/best`) embeds them, and an exact cosine
search (:class:`~bioclip_cli.retrieval.search.FlatIndex`) finds the k nearest rows of the run's key
embeddings (`embeddings/extracted_feature_from_val_split.hdf5`, group `key`; taxonomy from
`labels_val.json`, sample ids from the file).

`keys=LIB` searches a reference library instead (:mod:`bioclip_cli.retrieval.reference_library`: one made by
`bioclip library build`, or any published-layout embedding file), after checking that this run's model made it.
Inputs may also be folders and glob patterns of photographs, or a manifest pairing photos and barcodes by id
(:mod:`bioclip_cli.data.specimen_inputs`); each answer carries the input's id.

Which keys a query searches (`key="auto"`): image queries the image keys, DNA queries the DNA keys, and a
photograph with its barcode, embedded as (image + DNA) / 2, the `averaged_feature` keys. Any query can
search another key feature instead (e.g. `key="dna"`: photographs against the reference barcodes).

Consensus label per level (:func:`consensus`): each of the k neighbours votes for its label at that level;
neighbours whose label there is `not_classified` do not vote. The label with most votes wins; a tie goes to
the label whose voters have the larger summed similarity, and a remaining tie to the label of the nearer
neighbour. With no vote at all the consensus is `not_classified`. Votes are reported with it (e.g. 4/5).

New taxa (`novelty`, off by default): per level, a specimen is called *new* when the similarity of its
nearest reference is below that level's threshold (:mod:`bioclip_cli.retrieval.novelty`). `novelty="auto"`
takes the thresholds calibrated on the run's validation queries (seen and unseen species, against the keys
without the unseen species), computed once per query/key feature pair and kept in `results/novelty.json`
with their validation precision and recall (recomputed when the embeddings change); a number is one
threshold for every level.

A photograph that cannot be read or a barcode that cannot be embedded fails that input only; the others
are still predicted, and :attr:`PredictResult.failed` lists what failed and why.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bioclip_cli.config.schema import LEVELS
from bioclip_cli.data.dna import gap_count, strip_gaps
from bioclip_cli.data.embedding_file import FEATURE_DATASETS, embedding_file_paths, read_embedding_file
from bioclip_cli.data.fasta import barcode_problem, clean_barcode, read_fasta
from bioclip_cli.errors import BioclipError, DataError
from bioclip_cli.models.device import resolve_device
from bioclip_cli.models.encode import prepare_image
from bioclip_cli.retrieval.consensus import CONSENSUS_RULE, consensus
from bioclip_cli.runs.run_dir import resolve_run, run_checkpoint

KEY_FEATURES: tuple[str, ...] = ("auto", "image", "dna", "text", "avg", "all")
AUTO_KEYS = {"image": "image", "dna": "dna", "avg": "avg"}  # query feature -> key feature under key="auto"


@dataclass
class QueryInput:
    """One specimen to identify: a photograph, a barcode, or both."""

    name: str
    image: Path | None = None
    dna: str | None = None
    dna_name: str | None = None  # the FASTA id or `--dna #i` the barcode came from
    id: str | None = None  # the specimen's id: the manifest's, the FASTA record's, or the photo's path

    @property
    def feature(self) -> str:
        """The query feature: image, dna, or avg (both)."""
        if self.image is not None and self.dna is not None:
            return "avg"
        return "image" if self.image is not None else "dna"


@dataclass
class Prediction:
    """The answer for one input: neighbours best first, the consensus per level, or the error."""

    input: str
    query: str  # image, dna or avg
    id: str | None = None
    key: str | None = None  # the key feature searched
    neighbors: list[dict] = field(default_factory=list)  # rank, sample_id, similarity, order..species
    consensus: dict[str, dict] = field(default_factory=dict)  # level -> {label, votes, similarity}
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    novelty: dict[str, dict] = field(default_factory=dict)  # level -> decision, threshold, similarity (novelty on)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return {
            "input": self.input,
            "id": self.id,
            "query": self.query,
            "key": self.key,
            "status": "ok" if self.ok else "failed",
            "error": self.error,
            "notes": self.notes,
            "neighbors": self.neighbors,
            "consensus": self.consensus,
            **({"novelty": self.novelty} if self.novelty else {}),
        }


@dataclass
class PredictResult:
    run: Path
    checkpoint: Path
    embeddings: Path
    n_keys: int
    k: int
    predictions: list[Prediction]
    notes: list[str] = field(default_factory=list)
    novelty: dict | None = None  # mode, rule, thresholds per pair, where they were stored
    model_fingerprint: str = ""  # filled when a library is searched (and for --log)
    checkpoint_sha256: str = ""
    library_fingerprint: str | None = None  # the references' model, when a library is searched

    @property
    def failed(self) -> list[Prediction]:
        return [p for p in self.predictions if not p.ok]

    def rows(self) -> list[dict]:
        """Flat rows for CSV: the neighbours of each input, then a `consensus` row with the votes per level."""
        rows = []
        for p in self.predictions:
            base = {"input": p.input, "id": p.id, "query": p.query, "key": p.key}
            if not p.ok:
                rows.append({**base, "rank": None, "status": "failed", "error": p.error})
                continue
            for n in p.neighbors:
                rows.append({**base, **n, "status": "ok"})
            row = {**base, "rank": "consensus", "status": "ok"}
            for level, c in p.consensus.items():
                row[level] = c["label"]
                row[f"{level}_votes"] = c["votes"]
                if level in p.novelty:
                    row[f"{level}_novelty"] = p.novelty[level]["decision"]
            rows.append(row)
        return rows

    def to_dict(self) -> dict:
        return {
            "run": str(self.run),
            "checkpoint": str(self.checkpoint),
            "embeddings": str(self.embeddings),
            "n_keys": self.n_keys,
            "k": self.k,
            "consensus_rule": CONSENSUS_RULE,
            "notes": self.notes,
            "failed": len(self.failed),
            "predictions": [p.to_dict() for p in self.predictions],
            **({"novelty": self.novelty} if self.novelty else {}),
        }


ROW_COLUMNS = ("input", "id", "query", "key", "rank", "sample_id", "similarity", *LEVELS,
               *(f"{lv}_votes" for lv in LEVELS), "status", "error",
               *(f"{lv}_novelty" for lv in LEVELS))  # fmt: skip


# ------------------------------------------------------------------------------------------- inputs


def collect_inputs(
    images: Sequence[str | Path] = (),
    dna: Sequence[str] = (),
    dna_fasta: str | Path | None = None,
    manifest: str | Path | None = None,
) -> list[QueryInput]:
    """The specimens to identify. Photographs may be files, folders or globs; barcodes come from `dna` then the
    FASTA file; with photographs as well, the i-th barcode is paired with the i-th photograph (the counts must
    match). A `manifest` pairs them by id instead (and cannot be combined with the others)."""
    from bioclip_cli.data.specimen_inputs import expand_image_paths, specimens_from_manifest

    if manifest is not None:
        if images or dna or dna_fasta is not None:
            raise BioclipError("--manifest pairs photographs and barcodes by id; do not combine it with other inputs")
        specimens, problems = specimens_from_manifest(manifest)
        if problems:
            kind, sid, detail = problems[0]
            raise DataError(manifest, f"{len(problems)} row(s) of {manifest} cannot be used (first: {sid}: {detail})",
                            "fix the rows named, or leave them out")  # fmt: skip
        return [QueryInput(s.id, s.image, s.barcode, s.id if s.barcode else None, s.id) for s in specimens]
    barcodes = [(f"dna #{i + 1}", seq) for i, seq in enumerate(dna)]
    if dna_fasta is not None:
        barcodes += [(rec.id, rec.sequence) for rec in read_fasta(dna_fasta)]
    images = expand_image_paths(images, missing_ok=True) if images else []
    if not images and not barcodes:
        raise BioclipError(
            "nothing to identify: give photographs, --dna SEQUENCE or --dna-fasta FILE",
            "bioclip predict specimen.jpg --run runs/demo",
        )
    if images and barcodes:
        if len(images) != len(barcodes):
            raise BioclipError(
                f"{len(images)} photograph(s) and {len(barcodes)} barcode(s): with both, each photograph needs its "
                "barcode (paired in order)",
                "give as many barcodes as photographs, or predict them in two calls",
            )
        return [QueryInput(f"{img} + {name}", img, seq, name, name) for img, (name, seq) in zip(images, barcodes)]
    if images:
        return [QueryInput(str(img), image=img, id=str(img)) for img in images]
    return [QueryInput(name, dna=seq, dna_name=name, id=name) for name, seq in barcodes]


# ---------------------------------------------------------------------------------------------- core


def _check_embeddings_source(run_root: Path, checkpoint: Path, h5_path: Path, split: str, notes: list[str]) -> None:
    """Warn when the key embeddings may come from other weights than the checkpoint used for the queries."""
    redo = f"re-export them with `bioclip embed --run {run_root} --which {checkpoint.name}`"
    info_path = run_root / "embeddings" / f"embed_{split}.json"
    try:
        exported_from = json.loads(info_path.read_text()).get("checkpoint") if info_path.is_file() else None
    except (OSError, json.JSONDecodeError, AttributeError):
        exported_from = None
    if exported_from and Path(exported_from).name in ("best", "last") and Path(exported_from).name != checkpoint.name:
        notes.append(
            f"the key embeddings were exported with the {Path(exported_from).name} checkpoint, the queries use "
            f"{checkpoint.name}; {redo}"
        )
    elif (checkpoint / "model.safetensors").stat().st_mtime > h5_path.stat().st_mtime:
        notes.append(f"{checkpoint} changed after the key embeddings were exported; {redo}")


def _prepare(inputs: list[QueryInput], cfg) -> tuple[list[Prediction], dict, dict]:
    """Predictions to fill, and the inputs prepared as the evaluation prepares them: {index: pixel tensor},
    {index: cleaned barcode}. An input that cannot be prepared gets its error here (nothing is raised)."""
    from bioclip_cli.data.images import EvalTransform

    predictions = [Prediction(q.name, q.feature, q.id) for q in inputs]
    transform = EvalTransform(cfg.data.image)
    d = cfg.data.dna
    pixels, barcodes = {}, {}
    for i, q in enumerate(inputs):
        problems = []
        if q.image is not None:
            tensor, problem = prepare_image(q.image, transform)
            if problem:
                problems.append(problem)
            else:
                pixels[i] = tensor
        if q.dna is not None:
            given = clean_barcode(q.dna)
            gaps = gap_count(given) if d.gaps == "strip" else 0
            seq = strip_gaps(given) if gaps else given  # aligned FASTA: read as the sequence it aligns, as in training
            problem = barcode_problem(seq, d.k, d.max_len)
            if problem and gaps and problem.startswith("not a DNA sequence"):  # positions as the user wrote them
                problem = barcode_problem(given.replace(".", "-"), d.k, d.max_len)
            if problem:
                problems.append(f"barcode {q.dna_name}: {problem}" if q.image is not None else problem)
            else:
                barcodes[i] = seq
                if gaps:
                    predictions[i].notes.append(
                        f"barcode {q.dna_name}: removed {gaps} alignment gap character(s) ('-', '.') before embedding"
                    )
                if len(seq) > d.max_len:
                    predictions[i].notes.append(
                        f"barcode {q.dna_name} has {len(seq)} nt; the model reads its first {d.max_len} (as in training)"
                    )
        if problems:
            predictions[i].error = "; ".join(problems)
    return predictions, pixels, barcodes


def _embed(cfg, checkpoint: Path, device: str | None, batch_size: int, pixels: dict, barcodes: dict) -> dict:
    """{"image": {index: unit vector}, "dna": {index: unit vector}} with the run's model, batch by batch (LoRA
    merged or not as the run's `eval.merge_lora` says, as `bioclip embed` embedded the keys)."""
    import torch

    from bioclip_cli.data.dna import kmer_tokenize
    from bioclip_cli.models.encode import build_embedding_model, lora_merged_if
    from bioclip_cli.progress import progress_bar

    feats: dict[str, dict[int, np.ndarray]] = {"image": {}, "dna": {}}
    if not pixels and not barcodes:
        return feats
    dev = resolve_device(device)
    model = build_embedding_model(cfg, checkpoint).to(dev).eval()
    d = cfg.data.dna

    def image_batch(rows):
        return model.encode_image(torch.stack([pixels[i] for i in rows]).to(dev))

    def dna_batch(rows):
        ids, mask = kmer_tokenize([barcodes[i] for i in rows], d.k, d.max_len, d.prefix_id, d.gaps)
        return model.encode_dna(torch.from_numpy(ids).to(dev), torch.from_numpy(mask).to(dev))

    bar_ctx = progress_bar(len(pixels) + len(barcodes), "Embedding inputs", unit="inputs")
    with bar_ctx as bar, lora_merged_if(model, cfg.eval.merge_lora), torch.inference_mode():  # as `bioclip embed`
        for modality, rows, encode in (("image", list(pixels), image_batch), ("dna", list(barcodes), dna_batch)):
            for s in range(0, len(rows), batch_size):
                block = rows[s : s + batch_size]
                feats[modality].update(zip(block, encode(block).float().cpu().numpy()))
                bar.advance(len(block))
    return feats


def _search(
    predictions: list[Prediction], feats: dict, ef, key: str, k: int, device: str | None, run_root: Path
) -> int:
    """Fill the neighbours and consensus of every prepared input; returns the number of keys."""
    from bioclip_cli.retrieval.search import FlatIndex

    n_keys = ef.n_rows("key")
    if n_keys < 1:
        raise DataError(ef.h5_path, f"{ef.h5_path.name}: the key group is empty", f"bioclip embed --run {run_root}")
    labels = ef.labels["key"]
    ids = ef.sample_ids.get("key")
    levels = [lv for lv in LEVELS if lv in labels]
    by_key: dict[str, list[int]] = {}
    for i, p in enumerate(predictions):
        if p.ok:
            by_key.setdefault(AUTO_KEYS[p.query] if key == "auto" else key, []).append(i)
    for key_feature, rows in by_key.items():
        index = FlatIndex(np.asarray(ef.dataset("key", key_feature)[()]), device=device or "auto")
        queries = np.stack([_query_vector(feats, i, predictions[i].query) for i in rows])
        if queries.shape[1] != index.dim:
            raise DataError(
                ef.h5_path,
                f"the model embeds into {queries.shape[1]} dimensions but {FEATURE_DATASETS[key_feature]} has "
                f"{index.dim}",
                f"re-export the embeddings with this run's model: bioclip embed --run {run_root}",
            )
        kk = min(k, index.n_keys)
        scores, neighbors = index.search(queries, kk)
        for i, row_scores, row_ids in zip(rows, scores, neighbors):
            p = predictions[i]
            p.key = key_feature
            p.neighbors = [
                _neighbor(r + 1, int(j), float(s), n_keys, labels, ids, levels, stacked=key_feature == "all")
                for r, (s, j) in enumerate(zip(row_scores, row_ids))
            ]
            p.consensus = consensus(p.neighbors, levels)
            if kk < k:
                p.notes.append(f"only {kk} reference specimens to search")
    return n_keys


def _search_reference(
    predictions: list[Prediction], feats: dict, reference, key: str, k: int, device, index: str
) -> list[str]:
    """Fill the neighbours and consensus of every prepared input from a reference library; returns notes."""
    from bioclip_cli.retrieval.reference_library import ReferenceIndex

    levels = [lv for lv in LEVELS if lv in reference.taxonomy]
    by_key: dict[str, list[int]] = {}
    for i, p in enumerate(predictions):
        if p.ok:
            by_key.setdefault(AUTO_KEYS[p.query] if key == "auto" else key, []).append(i)
    notes: list[str] = []
    for key_feature, rows in by_key.items():
        searcher = ReferenceIndex(reference, key_feature, index=index, device=device or "auto")
        queries = np.stack([_query_vector(feats, i, predictions[i].query) for i in rows])
        if queries.shape[1] != searcher.dim:
            raise DataError("<library>", f"the model embeds into {queries.shape[1]} dimensions, the library's "
                            f"{key_feature} vectors have {searcher.dim}")  # fmt: skip
        scores, found = searcher.search(queries, k)
        notes += searcher.notes
        for i, row_scores, row_ids in zip(rows, scores, found):
            p = predictions[i]
            p.key = key_feature
            p.neighbors = [
                _neighbor(r + 1, int(j), float(sc), len(reference), reference.taxonomy, reference.ids, levels, False)
                for r, (sc, j) in enumerate(zip(row_scores, row_ids))
            ]
            p.consensus = consensus(p.neighbors, levels)
            if searcher.n_keys < k:
                p.notes.append(f"only {searcher.n_keys} reference specimens with {key_feature} embeddings to search")
    return notes


def predict(
    run: str | Path,
    images: Sequence[str | Path] = (),
    dna: Sequence[str] = (),
    dna_fasta: str | Path | None = None,
    *,
    manifest: str | Path | None = None,
    keys: str | Path | None = None,
    index: str = "auto",
    k: int = 5,
    key: str = "auto",
    device: str | None = None,
    batch_size: int = 32,
    which: str = "best",
    split: str = "val",
    novelty: str | float = "off",
) -> PredictResult:
    """Identify photographs and/or barcodes against the key embeddings of run directory `run`.

    `key`: the key feature to search (see the module docstring); `device`: torch device for the model and
    the search (default: the best available); `which`: the run's best or last checkpoint; `split`: whose
    exported embeddings hold the keys (the key group is the same for val and test); `keys`: a reference library
    to search instead (refused when another model made it); `index`: auto, flat or ivf (for `keys`);
    `novelty`: "off", "auto" or one similarity threshold (see the module docstring).
    """
    from bioclip_cli.config import load_run_config

    if k < 1:
        raise BioclipError(f"--k must be at least 1, got {k}")
    if batch_size < 1:
        raise BioclipError(f"--batch-size must be at least 1, got {batch_size}")
    if key not in KEY_FEATURES:
        raise BioclipError(f"--key {key!r} is not a key feature", f"use one of: {', '.join(KEY_FEATURES)}")
    novelty = _novelty_mode(novelty)
    inputs = collect_inputs(images, dna, dna_fasta, manifest)  # cheap checks first: no model for a usage error
    rd = resolve_run(run)
    cfg = load_run_config(rd.config)
    checkpoint = run_checkpoint(rd, which)
    h5_path, labels_path = embedding_file_paths(rd.embeddings, split)
    if keys is not None:
        result = _predict_against_library(rd, cfg, checkpoint, inputs, keys, k=k, key=key, device=device,
                                          batch_size=batch_size, index=index)  # fmt: skip
        if novelty != "off":
            result.novelty = _apply_novelty(result.predictions, rd.root, novelty, device, h5_path, labels_path)
        return result
    if not h5_path.is_file() or not labels_path.is_file():
        missing = h5_path if not h5_path.is_file() else labels_path
        raise DataError(
            missing,
            f"{rd.root} has no reference embeddings to search ({missing} is missing)",
            f"export them first: bioclip embed --run {rd.root}" + ("" if split == "val" else f" --split {split}"),
        )
    _check_modalities(cfg, inputs, rd.root)
    notes: list[str] = []
    _check_embeddings_source(rd.root, checkpoint, h5_path, split, notes)
    predictions, feats = _prepared_and_embedded(inputs, cfg, checkpoint, device, batch_size)
    with read_embedding_file(h5_path, labels_path) as ef:
        n_keys = _search(predictions, feats, ef, key, k, device, rd.root)
    novelty_info = (
        _apply_novelty(predictions, rd.root, novelty, device, h5_path, labels_path) if novelty != "off" else None
    )
    return PredictResult(rd.root, checkpoint, h5_path, n_keys, k, predictions, notes, novelty=novelty_info)


def _prepared_and_embedded(inputs, cfg, checkpoint, device, batch_size) -> tuple[list[Prediction], dict]:
    """Predictions to fill (with each unusable input's error) and the embeddings of the usable inputs."""
    predictions, pixels, barcodes = _prepare(inputs, cfg)
    valid = {i for i, p in enumerate(predictions) if p.ok}
    feats = _embed(
        cfg, checkpoint, device, batch_size,
        {i: x for i, x in pixels.items() if i in valid}, {i: s for i, s in barcodes.items() if i in valid},
    )  # fmt: skip
    return predictions, feats


def _check_modalities(cfg, inputs: list[QueryInput], root: Path) -> None:
    for modality, needed in (("image", any(q.image for q in inputs)), ("dna", any(q.dna is not None for q in inputs))):
        if needed and modality not in cfg.model.modalities:
            raise BioclipError(
                f"the model of {root} has no {modality} encoder (modalities: {', '.join(cfg.model.modalities)})",
                "identify with the inputs this model embeds",
            )


def _predict_against_library(rd, cfg, checkpoint, inputs, keys, *, k, key, device, batch_size, index) -> PredictResult:
    from bioclip_cli.models.fingerprint import checkpoint_sha256, model_fingerprint
    from bioclip_cli.retrieval.reference_library import check_same_model, load_reference

    _check_modalities(cfg, inputs, rd.root)
    reference = load_reference(keys)
    sha = checkpoint_sha256(checkpoint)
    fingerprint = model_fingerprint(cfg, checkpoint, sha)
    notes = [n for n in [check_same_model(reference, fingerprint, str(keys))] if n]
    predictions, feats = _prepared_and_embedded(inputs, cfg, checkpoint, device, batch_size)
    notes += _search_reference(predictions, feats, reference, key, k, device, index)
    result = PredictResult(rd.root, checkpoint, Path(keys), len(reference), k, predictions, notes)
    result.model_fingerprint, result.checkpoint_sha256 = fingerprint, sha
    result.library_fingerprint = reference.model_fingerprint
    return result


def write_provenance(path: str | Path, result: PredictResult, arguments: Sequence[str]) -> Path:
    """`--log FILE`: what made these predictions (package version, model fingerprint and checkpoint sha256, the
    references searched, time, arguments), so that an identification can be traced and repeated."""
    import datetime
    import platform

    from bioclip_cli import __version__
    from bioclip_cli.atomic_write import write_text
    from bioclip_cli.models.fingerprint import checkpoint_sha256, model_fingerprint

    if not result.checkpoint_sha256:
        from bioclip_cli.config import load_run_config

        result.checkpoint_sha256 = checkpoint_sha256(result.checkpoint)
        result.model_fingerprint = model_fingerprint(load_run_config(Path(result.run) / "config.yaml"),
                                                     result.checkpoint, result.checkpoint_sha256)  # fmt: skip
    record = {
        "tool": f"bioscan-clip {__version__}",
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "arguments": list(arguments),
        "run": str(result.run),
        "checkpoint": str(result.checkpoint),
        "checkpoint_sha256": result.checkpoint_sha256,
        "model_fingerprint": result.model_fingerprint,
        "references": str(result.embeddings),
        "references_model_fingerprint": result.library_fingerprint,
        "n_references": result.n_keys,
        "k": result.k,
        "inputs": [p.id or p.input for p in result.predictions],
        "failed": [p.id or p.input for p in result.failed],
    }
    return write_text(path, json.dumps(record, indent=2) + "\n")


def _query_vector(feats: dict[str, dict[int, np.ndarray]], i: int, query: str) -> np.ndarray:
    if query == "avg":
        return (feats["image"][i] + feats["dna"][i]) / 2  # as averaged_feature: the mean of the unit embeddings
    return feats[query][i]


_STACKED = ("image", "dna", "text")  # the blocks of all_key_features, in order


def _neighbor(rank: int, j: int, similarity: float, n_keys: int, labels, ids, levels, stacked: bool) -> dict:
    row = j % n_keys
    sample = str(ids[row]) if ids is not None else f"key row {row}"
    if stacked:  # all_key_features: the image, DNA and text embeddings of the keys, stacked
        sample = f"{sample} ({_STACKED[j // n_keys]})"
    return {"rank": rank, "sample_id": sample, "similarity": round(similarity, 6),
            **{lv: str(labels[lv][row]) for lv in levels}}  # fmt: skip


# -------------------------------------------------------------------------------------------- novelty


def novelty_path(run_root: Path) -> Path:
    """Where `novelty="auto"` keeps its calibrated thresholds: `RUN/results/novelty.json`."""
    return Path(run_root) / "results" / "novelty.json"


def _novelty_mode(novelty: str | float) -> str | float:
    if novelty in ("off", "auto"):
        return novelty
    try:
        value = float(novelty)
    except (TypeError, ValueError):
        value = None
    if value is None or not -1.0 <= value <= 1.0:
        raise BioclipError(f"--novelty must be auto, off or a similarity in [-1, 1], got {novelty!r}",
                           "e.g. --novelty auto, or --novelty 0.6")  # fmt: skip
    return value


def _apply_novelty(predictions: list[Prediction], run_root: Path, novelty, device, h5_path, labels_path) -> dict:
    """Fill `Prediction.novelty` from the rank-1 similarity; returns what the result reports about it. With
    `auto` the thresholds come from the run's validation embeddings (`h5_path`, `labels_path`), also when
    another reference library was searched (they describe the model's similarities)."""
    from bioclip_cli.retrieval.novelty import RULE, annotate, stored_calibration

    if novelty == "auto" and (not Path(h5_path).is_file() or not Path(labels_path).is_file()):
        raise DataError(h5_path, f"--novelty auto calibrates on {run_root}'s validation embeddings, which are missing",
                        f"export them: bioclip embed --run {run_root}; or give a fixed threshold (--novelty 0.6)")  # fmt: skip

    info: dict = {"mode": "auto" if novelty == "auto" else "fixed", "rule": RULE, "thresholds": {}}
    if novelty == "auto":
        info["file"] = str(novelty_path(run_root))
    for p in predictions:
        if not p.ok or not p.neighbors:
            continue
        levels = list(p.consensus)
        pair = f"{p.query}|{p.key}"
        if pair not in info["thresholds"]:
            if novelty == "auto":
                with read_embedding_file(h5_path, labels_path) as ef:
                    cal = stored_calibration(ef, novelty_path(run_root), p.query, p.key, device=device or "auto")
                info["thresholds"][pair] = {lv: cal["levels"][lv] for lv in levels}
            else:
                info["thresholds"][pair] = {lv: {"threshold": float(novelty)} for lv in levels}
        thresholds = {lv: v["threshold"] for lv, v in info["thresholds"][pair].items()}
        p.novelty = annotate(p.neighbors, p.consensus, thresholds)
    return info


def novelty_summary(p: Prediction) -> str:
    """One line per input, e.g. "species: new (nearest: X, similarity 0.41 < 0.55); genus: Y (5/5)"."""
    from bioclip_cli.retrieval.novelty import summary

    return summary(p.novelty, p.consensus, len(p.neighbors))
