"""Encoding rows of a dataset group with a model: the engine behind `embed`, `predict` and training's evaluation.

:func:`encode_rows` runs a model over a group in file order (sharded across processes when an Accelerate
`accelerator` of several is given, the rows gathered back in order); :func:`encode_group` collects all of them;
:func:`lora_merged_if` folds LoRA updates into the base weights meanwhile (`eval.merge_lora`); and
:func:`build_embedding_model` makes the model a configuration and a checkpoint describe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from bioclip_cli.config.schema import RunConfig
from bioclip_cli.data.datasets import EvalDataset, collate
from bioclip_cli.data.sampler import shard_rows
from bioclip_cli.progress import Bar


def ignore_sigint(_worker_id: int) -> None:
    """DataLoader worker init: leave Ctrl-C to the main process, which stops cleanly and saves."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def autocast_context(device: torch.device, autocast: str):
    if autocast == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def lora_merged_if(model, merge: bool):
    """`model.lora_merged()` when `merge` (see `eval.merge_lora`), else a context that changes nothing."""
    return model.lora_merged() if merge else nullcontext()


def encode_rows(
    model: torch.nn.Module,
    dataset: EvalDataset,
    *,
    device: torch.device,
    batch_size: int,
    num_workers: int = 0,
    autocast: str = "none",
    accelerator=None,
    bar: Bar | None = None,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """`(first_row, {modality: float32 [n, d]})` for consecutive blocks of the group's rows, in file order.

    With an `accelerator` of several processes, every process must call this with the same dataset; each
    encodes its shard and every process receives the gathered rows. The model is put in eval mode. It is
    used as it is: callers merge LoRA around the whole loop (:func:`lora_merged_if`), as :func:`encode_group`
    and :func:`embed` do.
    """
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    n = len(dataset)
    modalities = [m for m in model.modalities if m in dataset.modalities]
    steps = list(shard_rows(n, batch_size, rank, world))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=[rows for rows, _ in steps],
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=ignore_sigint if num_workers else None,
        generator=torch.Generator().manual_seed(0),  # the global RNG stays untouched (exact resume)
    )
    model.eval()
    start = 0
    with torch.inference_mode(), autocast_context(device, autocast):
        for step, batch in enumerate(loader):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            feats = model(batch)
            width = len(steps[step][0])
            out = {}
            for m in modalities:
                x = feats[m].float()
                if world > 1:
                    x = accelerator.gather(x.contiguous())
                    valid = [min(batch_size, max(0, n - start - r * batch_size)) for r in range(world)]
                    x = torch.cat([x[r * width : r * width + valid[r]] for r in range(world)])
                out[m] = x.cpu().numpy()
            rows = len(next(iter(out.values())))
            yield start, out
            start += rows
            if bar is not None:
                bar.advance(rows)
    if start != n:  # pragma: no cover - a sharding bug would show here
        raise RuntimeError(f"encoded {start} rows of {n} in group {dataset.group!r}")


def encode_group(model, dataset: EvalDataset, *, merge_lora: bool = True, **kwargs) -> dict[str, np.ndarray]:
    """All rows of a group, encoded: {modality: float32 [N, d]} (see :func:`encode_rows`).

    `merge_lora` (the default of `eval.merge_lora`): with the LoRA updates folded into the base weights
    meanwhile; the weights are restored bit for bit afterwards, so training's evaluation can use it.
    """
    parts: dict[str, list[np.ndarray]] = {}
    with lora_merged_if(model, merge_lora):
        for _, feats in encode_rows(model, dataset, **kwargs):
            for m, x in feats.items():
                parts.setdefault(m, []).append(x)
    return {m: np.concatenate(xs) for m, xs in parts.items()}


def build_embedding_model(cfg: RunConfig, checkpoint: Path | None):
    """The model with `checkpoint` loaded (encoders it covers skip their pretrained download)."""
    from accelerate.utils import set_seed

    from bioclip_cli.models.build import build_model

    model_cfg = dataclasses.replace(cfg.model, checkpoint=str(checkpoint) if checkpoint else cfg.model.checkpoint)
    set_seed(cfg.train.seed)  # random (weights: null) backbones are reproducible too
    return build_model(model_cfg)


# ------------------------------------------------------------------------------- user-given specimens


def prepare_image(path: Path, transform) -> tuple[torch.Tensor | None, str | None]:
    """A photograph through the evaluation transform, or the reason it cannot be read (never raises)."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, f"photograph {path} does not exist"
    except IsADirectoryError:
        return None, f"{path} is a folder, not a photograph"
    except OSError as exc:
        return None, f"cannot read {path} ({exc.strerror or exc})"
    if not data:
        return None, f"{path} is empty"
    try:
        return transform(data), None
    except Image.DecompressionBombError:
        return None, f"{path} is too large an image for Pillow to decode safely"
    except UnidentifiedImageError:
        return None, f"{path} is not an image file (Pillow recognises no image format in it)"
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt image data, bad headers
        return None, f"{path} is a damaged image ({exc})"


def encode_specimens(
    model,
    specimens,
    *,
    image_cfg,
    dna_cfg,
    device: torch.device,
    batch_size: int = 32,
    merge_lora: bool = True,
    bar: Bar | None = None,
) -> tuple[dict[str, dict[int, np.ndarray]], dict[int, str]]:
    """Embed user-given specimens (:class:`~bioclip_cli.data.specimen_inputs.Specimen`) as the evaluation
    embeds its queries: photographs through the eval transform (`image_cfg`), barcodes cleaned and k-mer
    tokenised (`dna_cfg`). Returns ``{"image": {i: unit vector}, "dna": {...}}`` and ``{i: why it failed}``
    (a specimen that cannot be prepared fails alone; the others are embedded)."""
    from bioclip_cli.data.dna import kmer_tokenize
    from bioclip_cli.data.fasta import barcode_problem, clean_barcode
    from bioclip_cli.data.images import EvalTransform

    transform = EvalTransform(image_cfg)
    pixels: dict[int, torch.Tensor] = {}
    barcodes: dict[int, str] = {}
    failed: dict[int, str] = {}
    for i, s in enumerate(specimens):
        problems = []
        if s.image is not None and "image" in model.modalities:
            tensor, problem = prepare_image(s.image, transform)
            if problem:
                problems.append(problem)
            else:
                pixels[i] = tensor
        if s.barcode is not None and "dna" in model.modalities:
            seq = clean_barcode(s.barcode)
            problem = barcode_problem(seq, dna_cfg.k, dna_cfg.max_len)
            if problem:
                problems.append(f"barcode: {problem}")
            else:
                barcodes[i] = seq
        if problems:
            failed[i] = "; ".join(problems)
    pixels = {i: x for i, x in pixels.items() if i not in failed}
    barcodes = {i: b for i, b in barcodes.items() if i not in failed}
    feats: dict[str, dict[int, np.ndarray]] = {"image": {}, "dna": {}}

    def image_batch(rows):
        return model.encode_image(torch.stack([pixels[i] for i in rows]).to(device))

    def dna_batch(rows):
        ids, mask = kmer_tokenize([barcodes[i] for i in rows], dna_cfg.k, dna_cfg.max_len, dna_cfg.prefix_id)
        return model.encode_dna(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))

    model.eval()
    with lora_merged_if(model, merge_lora), torch.inference_mode():
        for modality, rows, encode in (("image", list(pixels), image_batch), ("dna", list(barcodes), dna_batch)):
            for s in range(0, len(rows), batch_size):
                block = rows[s : s + batch_size]
                feats[modality].update(zip(block, encode(block).float().cpu().numpy()))
                if bar is not None:
                    bar.advance(len(block))
    return feats, failed
