"""torch Datasets over one group of a BIOSCAN HDF5, and the collate that batches them.

An item is a dict with only the modalities asked for: ``index`` (the row, which is also the training
label: only the paired sample is a positive), ``image`` [3, H, W], ``dna``/``dna_mask`` [T],
``text``/``text_mask``/``text_type`` [L]. :func:`collate` stacks items into exactly those keys.

Training images are **uint8** pixels (a channels-last view): a quarter of the bytes of float32 through the
workers' shared memory and the host-to-device copy; :func:`batch_to_device` moves a batch and makes the
float32 model input there (``x / 255``, mean/std: the same values the float pipeline gives). Evaluation
images are float32 already (the compat transform computes in float).

``__getitems__`` (what a DataLoader with automatic batching calls with each batch's indices) returns the
same items as ``[ds[i] for i in indices]``, made batch-wise: every image is written straight into its
slot of one batch tensor (in shared memory inside a DataLoader worker) and the item's ``image`` is that
slot, so :func:`collate` hands the batch on without copying it; the barcodes are tokenised in one call.

- :class:`TrainDataset`: the training augmentation, deterministic per item: the seed of row `i` in epoch
  `e` is derived from (seed, e, i), so a run gives the same batches with any number of workers.
  Call :meth:`TrainDataset.set_epoch` before each epoch (with non-persistent workers).
- :class:`EvalDataset`: the compat evaluation transform; ``.labels`` (taxonomy per row) and
  ``.sample_ids`` for the embedding files.

Text comes from the stored ``language_tokens_*`` when ``data.text.use_stored_tokens`` and the file has
them with the configured length (compat); otherwise the taxonomy strings are tokenised with `tokenizer`
(the text model's, ``model.text.tokenizer``), once per distinct string.

The datasets take what they read, not the whole run configuration: the :class:`DataConfig` (image, DNA and
text settings), the `modalities` to load, the text `tokenizer` and, for training, the augmentation `seed`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bioclip_cli.config.schema import MODALITIES, DataConfig, ImageDataConfig
from bioclip_cli.data.dna import kmer_tokenize
from bioclip_cli.data.hdf5 import TOKEN_PREFIX, BioscanH5
from bioclip_cli.data.images import AugmentPlan, EvalTransform, TrainTransform, pixels_to_float
from bioclip_cli.data.taxonomy import LEVELS, load_text_tokenizer, taxonomy_strings, tokenize_taxonomy
from bioclip_cli.errors import DataError

_MASK64 = (1 << 64) - 1
_BATCH_READ_ROWS = 4  # from this many rows on, __getitems__ reads each string/token column once for all


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one item (splitmix64 over seed, epoch and index)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) & 0x7FFF_FFFF_FFFF_FFFF


class _GroupDataset(torch.utils.data.Dataset):
    train = False

    def __init__(
        self, h5_path: str | Path, group: str, data: DataConfig, *, modalities: Sequence[str], tokenizer: str | None
    ):
        self.data = data
        self.tokenizer = tokenizer
        self.modalities = tuple(modalities)
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad:
            raise ValueError(f"unknown modalities {bad}; expected some of {MODALITIES}")
        self.h5 = BioscanH5(h5_path)
        self.reader = self.h5.group(group)
        self.group = group
        needs = {"image": ("image", "image_mask"), "dna": ("barcode",), "text": ()}
        for modality in self.modalities:
            for name in needs[modality]:
                self.reader.dataset(name)  # DataError naming file, group and what exists
        self.transform = (TrainTransform if self.train else EvalTransform)(data.image)
        self.skipped_rows = 0  # training rows dropped for an unreadable image, in this process
        self._text_codes: np.ndarray | None = None
        self._text_tokens: dict[str, np.ndarray] | None = None
        self.stored_text = False
        if "text" in self.modalities:
            self._prepare_text()

    def _prepare_text(self) -> None:
        max_len = self.data.text.max_len
        reader = self.reader
        if (
            self.data.text.use_stored_tokens
            and reader.has_language_tokens()
            and reader.dataset(TOKEN_PREFIX + "input_ids").shape[1] == max_len
        ):
            self.stored_text = True
            return
        for level in LEVELS:
            reader.dataset(level)
        tax = reader.taxonomy()
        text = taxonomy_strings(*(tax[level] for level in LEVELS))
        unique, codes = np.unique(text.astype(str), return_inverse=True)
        if self.tokenizer is None:
            raise ValueError(f"{self.group}: the text modality needs the text model's `tokenizer`")
        tokenizer = load_text_tokenizer(self.tokenizer)
        self._text_codes = codes.astype(np.int64).ravel()
        self._text_tokens = tokenize_taxonomy(tokenizer, list(unique), max_len)

    def __len__(self) -> int:
        return len(self.reader)

    def _seed(self, index: int) -> int | None:
        """The augmentation seed of row `index` (None: no random augmentation)."""
        return None

    def _image_into(
        self, slot: np.ndarray | torch.Tensor, index: int, data: bytes | None = None, plan: AugmentPlan | None = None
    ) -> None:
        """Decode and transform row `index`'s image (its bytes `data`, read here when not given) into `slot`
        (train: uint8 array [crop, crop, 3], with the item's augmentation `plan` when made beforehand; eval:
        float32 tensor [3, crop, crop])."""
        if data is None:
            data = self.reader.image_bytes(index)
        try:
            if not data:
                raise ValueError("no image bytes")
            if self.train:
                self.transform.augment(data, self._seed(index), out=slot, plan=plan)
            else:
                slot.copy_(self.transform(data))
        except Exception as exc:  # any decoder failure (PIL's DecompressionBombError is no OSError) names the row
            raise self._bad_image(index, exc) from exc

    def _bad_image(self, index: int, exc: BaseException) -> DataError:
        try:
            sample = f" ({self.reader.string(self.reader.id_column, index)})"
        except Exception:  # no id column: the row number alone
            sample = ""
        detail = str(exc) if isinstance(exc, (OSError, ValueError)) else f"{type(exc).__name__}: {exc}"
        return DataError(
            self.h5.path,
            f"{self.h5.path}: group {self.group!r} row {index}{sample} has an unreadable image ({detail})",
            "rebuild the file with `bioclip build-hdf5` (bad images are skipped and listed)"
            + ("; or let training skip such rows: --set data.bad_images=skip" if self.train else ""),
        )

    def _plan(self, index: int, data: bytes) -> AugmentPlan | None:
        if not data:
            return None
        try:
            return self.transform.plan(data, self._seed(index))
        except Exception as exc:
            raise self._bad_image(index, exc) from exc

    def _skip(self, error: DataError) -> bool:
        """True when a training row with an unreadable image is dropped from its batch (`data.bad_images`)."""
        if not self.train or self.data.bad_images != "skip":
            return False
        self.skipped_rows += 1
        print(f"Warning: skipped {error.message}", file=sys.stderr, flush=True)
        return True

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """The items of several rows, equal to ``[self[i] for i in indices]``, made batch-wise (module doc)."""
        rows = [int(i) for i in indices]
        if not rows:
            return []
        items: list[dict] = [{"index": i} for i in rows]
        bad: set[int] = set()  # training rows dropped for an unreadable image (data.bad_images: skip)
        if "image" in self.modalities:
            size = self.data.image.crop
            if self.train and len(rows) == 1 and torch.utils.data.get_worker_info() is None:
                # one item (``ds[i]``) outside a worker: numpy memory, the cheapest tensor to make (a batch
                # tensor and its per-item views cost some 40 us more per item than the whole of this)
                slot = np.empty((size, size, 3), dtype=np.uint8)
                self._image_into(slot, rows[0])
                items[0]["image"] = torch.from_numpy(slot).permute(2, 0, 1)
            elif self.train:  # uint8, channels last: the item is a [3, H, W] view of its [H, W, 3] slot
                batch = new_batch((len(rows), size, size, 3), torch.uint8)
                data = [self.reader.image_bytes(row) for row in rows]
                # every item's draws and geometry first, then the decodes (TrainTransform.plan says why)
                plans = []
                for row, b in zip(rows, data):
                    try:
                        plans.append(self._plan(row, b))
                    except DataError as exc:
                        if not self._skip(exc):
                            raise
                        bad.add(row)
                        plans.append(None)
                for row, slot, b, plan in zip(rows, batch.numpy(), data, plans):
                    if row in bad:
                        continue
                    try:
                        self._image_into(slot, row, b, plan)
                    except DataError as exc:
                        if not self._skip(exc):
                            raise
                        bad.add(row)
                for item, view in zip(items, batch.permute(0, 3, 1, 2).unbind(0)):
                    item["image"] = view
            else:
                batch = new_batch((len(rows), 3, size, size), torch.float32)
                for item, slot in zip(items, batch):
                    self._image_into(slot, item["index"])
                    item["image"] = slot
        few = len(rows) < _BATCH_READ_ROWS  # per-row reads; a batch reads each column once
        if "dna" in self.modalities:  # one tokenizer call for the batch
            d = self.data.dna
            reader = self.reader
            barcodes = [reader.string("barcode", i) for i in rows] if few else list(reader.barcodes(rows))
            ids, mask = kmer_tokenize(barcodes, d.k, d.max_len, d.prefix_id, d.gaps)
            for item, row_ids, row_mask in zip(items, ids, mask):
                item["dna"], item["dna_mask"] = row_ids, row_mask
        if "text" in self.modalities:
            if self.stored_text and few:
                per_row = [self.reader.language_token_row(i) for i in rows]
                tokens = {key: [t[key] for t in per_row] for key in per_row[0]} if per_row else {}
            elif self.stored_text:
                tokens = self.reader.language_tokens(rows)
            else:
                codes = self._text_codes[rows]
                tokens = {key: values[codes] for key, values in self._text_tokens.items()}
            for item, text, mask, types in zip(
                items, tokens["input_ids"], tokens["attention_mask"], tokens["token_type_ids"]
            ):
                item["text"], item["text_mask"], item["text_type"] = text, mask, types
        if bad:
            items = [item for item in items if item["index"] not in bad]
            if not items:
                raise DataError(
                    self.h5.path,
                    f"{self.h5.path}: every row of a batch of group {self.group!r} has an unreadable image "
                    f"(rows {', '.join(map(str, sorted(bad)))})",
                    "rebuild the file with `bioclip build-hdf5` (bad images are skipped and listed)",
                )
        return items

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]


class TrainDataset(_GroupDataset):
    """Training items of one group (usually `data.train_group`), with the augmentation seeded by `seed`
    (`train.seed`)."""

    train = True

    def __init__(
        self,
        h5_path: str | Path,
        group: str,
        data: DataConfig,
        *,
        modalities: Sequence[str],
        seed: int,
        tokenizer: str | None = None,
    ):
        super().__init__(h5_path, group, data, modalities=modalities, tokenizer=tokenizer)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation of every item (call before iterating an epoch)."""
        self.epoch = int(epoch)

    def _seed(self, index: int) -> int:
        return item_seed(self.seed, self.epoch, index)


class EvalDataset(_GroupDataset):
    """Evaluation items of one group: the deterministic compat transform; labels and ids alongside."""

    train = False

    def __init__(
        self,
        h5_path: str | Path,
        group: str,
        data: DataConfig,
        *,
        modalities: Sequence[str],
        tokenizer: str | None = None,
    ):
        super().__init__(h5_path, group, data, modalities=modalities, tokenizer=tokenizer)
        self._labels: dict[str, np.ndarray] | None = None
        self._ids: np.ndarray | None = None

    @property
    def labels(self) -> dict[str, np.ndarray]:
        """``{order, family, genus, species}`` -> str array, row-aligned (missing ranks: not_classified)."""
        if self._labels is None:
            self._labels = self.reader.taxonomy()
        return self._labels

    @property
    def sample_ids(self) -> np.ndarray:
        """processid (5M) or image_file (1M) of every row."""
        if self._ids is None:
            self._ids = self.reader.sample_ids()
        return self._ids

    def label_dicts(self) -> list[dict[str, str]]:
        """Row-aligned ``{"order", "family", "genus", "species"}`` dicts (the published labels JSON)."""
        labels = self.labels
        return [dict(zip(LEVELS, values)) for values in zip(*(labels[level].tolist() for level in LEVELS))]


def collate(items: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Stack items: ``index`` LongTensor [B]; ``image`` [B,3,H,W] (uint8 for training, float32 for
    evaluation); ``dna``, ``dna_mask`` [B,T]; ``text``, ``text_mask``, ``text_type`` [B,L] (only the keys the
    items carry).

    Images that are the consecutive slots of one batch (the items of a ``__getitems__`` call, in order)
    are returned as that batch, without a copy; any other images are stacked."""
    if not items:
        raise ValueError("collate() needs at least one item")
    out = {"index": torch.tensor([it["index"] for it in items], dtype=torch.long)}
    first = items[0]
    if "image" in first:
        images = [it["image"] for it in items]
        batch = _enclosing_batch(images)
        out["image"] = batch if batch is not None else torch.stack(images)
    for key in ("dna", "dna_mask", "text", "text_mask", "text_type"):
        if key in first:
            out[key] = torch.from_numpy(np.stack([it[key] for it in items]).astype(np.int64, copy=False))
    return out


def batch_to_device(batch: dict[str, torch.Tensor], device, image: ImageDataConfig) -> dict[str, torch.Tensor]:
    """Move a collated batch to `device` and make uint8 training images the model's float32 input there
    (:func:`~bioclip_cli.data.images.pixels_to_float` with the `image` settings, `data.image`); float
    images pass unchanged."""
    out = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
    if "image" in out:
        out["image"] = pixels_to_float(out["image"], image)
    return out


def new_batch(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialised tensor; in a DataLoader worker it lives in shared memory (as torch's default collate
    allocates its batches), so it reaches the main process without another copy."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    proto = torch.empty(0, dtype=dtype)
    storage = proto._typed_storage()._new_shared(math.prod(shape), device=proto.device)
    return proto.new(storage).resize_(shape)


def _is_dense(t: torch.Tensor) -> bool:
    """True when `t` covers exactly ``t.numel()`` consecutive elements of its storage (in any dimension order)."""
    span = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
    return span == t.numel() and t.numel() > 0


def _enclosing_batch(images: Sequence) -> torch.Tensor | None:
    """The [B, ...] tensor whose consecutive slots `images` are, in order (each slot a dense view with the
    same strides, e.g. a [3, H, W] view of [H, W, 3] memory), or None."""
    first = images[0]
    if not isinstance(first, torch.Tensor) or not _is_dense(first):
        return None
    n, start, ptr = first.numel(), first.storage_offset(), first.untyped_storage().data_ptr()
    for i, img in enumerate(images):
        if (
            not isinstance(img, torch.Tensor)
            or img.dtype != first.dtype
            or img.shape != first.shape
            or img.stride() != first.stride()
            or img.untyped_storage().data_ptr() != ptr
            or img.storage_offset() != start + i * n
        ):
            return None
    return first.as_strided((len(images), *first.shape), (n, *first.stride()), start)
