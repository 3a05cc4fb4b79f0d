"""The typed configuration of a run: one frozen dataclass per section.

A preset (YAML in `presets/`) is a partial dict over these fields; :mod:`.loader` merges presets,
`--config` files and `--set` overrides, converts values to the declared types and validates them.
Field defaults are the paper's v1 recipe (docs/method.md, Training recipes) wherever the paper fixes a value.
Cross-field checks live in `validate()` methods and raise ConfigError naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bioclip_cli.errors import ConfigError

Modality = Literal["image", "dna", "text"]
Finetune = Literal["lora", "full", "frozen"]
Level = Literal["order", "family", "genus", "species"]
LEVELS: tuple[str, ...] = ("order", "family", "genus", "species")
MODALITIES: tuple[str, ...] = ("image", "dna", "text")


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(key, f"{key}: {message}")


# ----------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ImageDataConfig:
    """Image decoding and transforms (docs/method.md, Training recipes): pixels stay in [0, 1] unless mean/std
    are given."""

    resize: int = 256  # shorter side after resize (bilinear, antialiased, on the float tensor)
    crop: int = 224  # eval: centre crop; train: RandomResizedCrop output size
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop area range
    ratio: list[float] = field(default_factory=lambda: [0.75, 4.0 / 3.0])  # RandomResizedCrop aspect range
    hflip: bool = True
    vflip: bool = True
    rotation: float = 45.0  # random rotation in degrees, +-
    color_jitter: float = 0.0  # brightness/contrast/saturation/hue strength (v1 at paper time: 0.5)
    mean: list[float] | None = None  # None: no normalisation (compat)
    std: list[float] | None = None
    draft: bool = True  # let Pillow decode large JPEGs at reduced size when the target is much smaller

    def validate(self, prefix: str) -> None:
        _check(self.resize > 0, f"{prefix}.resize", f"must be > 0, got {self.resize}")
        _check(0 < self.crop <= self.resize, f"{prefix}.crop", f"must be in 1..resize ({self.resize}), got {self.crop}")
        _check(
            len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1] <= 1,
            f"{prefix}.scale",
            f"must be [lo, hi] with 0 < lo <= hi <= 1, got {self.scale}",
        )
        _check(
            len(self.ratio) == 2 and 0 < self.ratio[0] <= self.ratio[1],
            f"{prefix}.ratio",
            f"must be [lo, hi] with 0 < lo <= hi, got {self.ratio}",
        )
        _check(0 <= self.rotation <= 180, f"{prefix}.rotation", f"must be in [0, 180] degrees, got {self.rotation}")
        _check(0 <= self.color_jitter <= 1, f"{prefix}.color_jitter", f"must be in [0, 1], got {self.color_jitter}")
        _check((self.mean is None) == (self.std is None), f"{prefix}.mean", "mean and std must be given together")
        if self.mean is not None:
            _check(len(self.mean) == 3, f"{prefix}.mean", f"needs 3 values (R, G, B), got {self.mean}")
            _check(
                len(self.std) == 3 and all(s > 0 for s in self.std),
                f"{prefix}.std",
                f"needs 3 positive values, got {self.std}",
            )


@dataclass(frozen=True)
class DnaDataConfig:
    """BarcodeBERT k-mer tokenisation (docs/method.md, Model): pad/truncate to max_len with N, k-mers, prefix id."""

    k: int = 5
    max_len: int = 660
    prefix_id: int | None = 0  # id prepended to every sequence (compat: 0, the <MASK> id); None: no prefix
    # alignment gaps '-' / '.' (aligned FASTA): strip = removed before the k-mers are cut (a gapped barcode reads
    # as its ungapped sequence); keep = the original BarcodeBERT code's behaviour (k-mers holding them are <UNK>)
    gaps: Literal["strip", "keep"] = "strip"

    def validate(self, prefix: str) -> None:
        _check(1 <= self.k <= 8, f"{prefix}.k", f"must be in 1..8, got {self.k}")
        _check(
            self.max_len >= self.k and self.max_len % self.k == 0,
            f"{prefix}.max_len",
            f"must be a positive multiple of k={self.k}, got {self.max_len}",
        )

    @property
    def n_tokens(self) -> int:
        return self.max_len // self.k + (0 if self.prefix_id is None else 1)


@dataclass(frozen=True)
class TextDataConfig:
    """Taxonomy text `"{order} {family} {genus} {species}"` and its tokenisation."""

    max_len: int = 20
    use_stored_tokens: bool = True  # compat: use the HDF5's language_tokens_* when present

    def validate(self, prefix: str) -> None:
        _check(self.max_len >= 2, f"{prefix}.max_len", f"must be >= 2, got {self.max_len}")


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how each modality is prepared."""

    hdf5: str = "data/BIOSCAN_5M/BIOSCAN_5M.hdf5"
    dataset: Literal["5m", "1m", "insect", "custom"] = "5m"
    train_group: str = "no_split_and_seen_train"
    key_group: str = "all_keys"
    val_groups: list[str] = field(default_factory=lambda: ["val_seen", "val_unseen"])  # [seen, unseen]
    test_groups: list[str] = field(default_factory=lambda: ["test_seen", "test_unseen"])  # [seen, unseen]
    num_workers: int = 4
    # a training image that cannot be decoded: skip its row (counted and reported) or fail naming it;
    # embed/eval always fail naming the group, row and id (their rows must stay aligned with the labels)
    bad_images: Literal["skip", "fail"] = "skip"
    image: ImageDataConfig = field(default_factory=ImageDataConfig)
    dna: DnaDataConfig = field(default_factory=DnaDataConfig)
    text: TextDataConfig = field(default_factory=TextDataConfig)

    def validate(self, prefix: str = "data") -> None:
        _check(bool(self.hdf5), f"{prefix}.hdf5", "must name an HDF5 file")
        _check(self.num_workers >= 0, f"{prefix}.num_workers", f"must be >= 0, got {self.num_workers}")
        for name in ("val_groups", "test_groups"):
            groups = getattr(self, name)
            _check(len(groups) == 2, f"{prefix}.{name}", f"must be [seen_group, unseen_group], got {groups}")
        self.image.validate(f"{prefix}.image")
        self.dna.validate(f"{prefix}.dna")
        self.text.validate(f"{prefix}.text")


# ---------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class LoraConfig:
    """peft LoRA on an encoder's attention projections (v1: r=4 on query and value, scale alpha/r = 1)."""

    r: int = 4
    alpha: float | None = None  # None: alpha = r (scale 1)
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])

    def validate(self, prefix: str) -> None:
        _check(self.r >= 1, f"{prefix}.r", f"must be >= 1, got {self.r}")
        _check(self.alpha is None or self.alpha > 0, f"{prefix}.alpha", f"must be > 0, got {self.alpha}")
        _check(0 <= self.dropout < 1, f"{prefix}.dropout", f"must be in [0, 1), got {self.dropout}")
        _check(len(self.target_modules) > 0, f"{prefix}.target_modules", "must name at least one module")

    @property
    def lora_alpha(self) -> float:
        return float(self.r if self.alpha is None else self.alpha)


@dataclass(frozen=True)
class ImageEncoderConfig:
    """ViT image encoder: architecture stated explicitly, weights source separately (None: random)."""

    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    image_size: int = 224
    patch_size: int = 16
    layer_norm_eps: float = 1e-6  # timm's eps; the released v1 weights were trained with it
    weights: str | None = "google/vit-base-patch16-224"  # hub id or local directory; None: random init
    finetune: Finetune = "lora"
    lora: LoraConfig = field(default_factory=LoraConfig)

    def validate(self, prefix: str) -> None:
        _arch_check(self, prefix)
        _check(
            self.image_size % self.patch_size == 0,
            f"{prefix}.image_size",
            f"must be a multiple of patch_size={self.patch_size}, got {self.image_size}",
        )
        self.lora.validate(f"{prefix}.lora")


@dataclass(frozen=True)
class DnaEncoderConfig:
    """BarcodeBERT (BERT masked-LM) DNA encoder."""

    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    vocab_size: int = 1027  # 4**k + 3 special tokens
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    weights: str | None = "ckpt/BarcodeBERT/5_mer/model_41.pth"  # model_41.pth state dict; None: random init
    pooling: Literal["softmax-mean", "mean"] = "softmax-mean"  # softmax-mean: compat (released weights)
    finetune: Finetune = "lora"
    lora: LoraConfig = field(default_factory=LoraConfig)

    def validate(self, prefix: str) -> None:
        _arch_check(self, prefix)
        self.lora.validate(f"{prefix}.lora")


@dataclass(frozen=True)
class TextEncoderConfig:
    """BERT text encoder for the taxonomy string."""

    hidden_size: int = 512
    num_layers: int = 4
    num_heads: int = 8
    intermediate_size: int = 2048
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    weights: str | None = "prajjwal1/bert-small"  # hub id or local directory; None: random init
    tokenizer: str = "prajjwal1/bert-small"  # hub id, local directory, or "bioclip-sample" (bundled vocabulary)
    pooling: Literal["mean-all", "mean"] = "mean-all"  # mean-all: compat (padding included)
    finetune: Finetune = "lora"
    lora: LoraConfig = field(default_factory=LoraConfig)

    def validate(self, prefix: str) -> None:
        _arch_check(self, prefix)
        self.lora.validate(f"{prefix}.lora")


def _arch_check(enc, prefix: str) -> None:
    for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size"):
        value = getattr(enc, name)
        _check(value >= 1, f"{prefix}.{name}", f"must be >= 1, got {value}")
    _check(
        enc.hidden_size % enc.num_heads == 0,
        f"{prefix}.hidden_size",
        f"must be divisible by num_heads={enc.num_heads}, got {enc.hidden_size}",
    )


@dataclass(frozen=True)
class ModelConfig:
    """The CLIP model: which encoders, their shapes and weights, the shared output width and the scale."""

    modalities: list[Modality] = field(default_factory=lambda: ["image", "dna", "text"])
    output_dim: int = 768
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    dna: DnaEncoderConfig = field(default_factory=DnaEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    logit_scale: float = 1 / 0.07  # s in s * A.B^T; v2 learns log(s) starting here
    learn_logit_scale: bool = False  # v1: fixed; v2 (CLIBD): learned
    head_seed: int = 0  # seed of the new heads' random initialisation (the untrained baselines' heads)
    checkpoint: str | None = None  # weights to load over the encoders: ours (.safetensors dir/file) or published .pth

    def validate(self, prefix: str = "model") -> None:
        _check(len(self.modalities) >= 1, f"{prefix}.modalities", "must name at least one of image, dna, text")
        _check(
            len(set(self.modalities)) == len(self.modalities),
            f"{prefix}.modalities",
            f"has duplicates: {self.modalities}",
        )
        _check(self.output_dim >= 1, f"{prefix}.output_dim", f"must be >= 1, got {self.output_dim}")
        _check(self.logit_scale > 0, f"{prefix}.logit_scale", f"must be > 0, got {self.logit_scale}")
        for name in self.modalities:
            getattr(self, name).validate(f"{prefix}.{name}")


# ---------------------------------------------------------------------------------------------- train


@dataclass(frozen=True)
class BestMetric:
    """Which evaluation number selects `checkpoints/best`: the mean over seen and unseen of one cell."""

    query: str = "image"
    key: str = "image"
    average: Literal["micro", "macro"] = "micro"
    k: int = 1
    level: Level = "species"

    def validate(self, prefix: str) -> None:
        _check(self.k >= 1, f"{prefix}.k", f"must be >= 1, got {self.k}")

    @property
    def label(self) -> str:
        return f"{self.query}|{self.key} {self.average} top-{self.k} {self.level} (mean of seen, unseen)"


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation recipe. Defaults are v1 (docs/method.md, Training recipes); the `*-clibd` presets
    switch to v2."""

    enabled: bool = True  # False for the untrained `none-*` baselines
    epochs: int = 15
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs when reached)
    batch_size: int = 400  # per process
    grad_accum: int = 1
    micro_batch_size: int | None = None  # gradient caching: embed the batch this many at a time (None: at once)
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    scheduler: Literal["constant", "onecycle", "cosine"] = "constant"
    min_lr: float = 1e-5  # cosine: the lr after the last step (cosine annealing from lr over all steps)
    onecycle_pct_start: float = 0.3
    onecycle_div_factor: float = 25.0  # start lr = max lr / div_factor
    lr_reference_batch: int | None = None  # v2: lr x (global batch / this); None: no scaling
    loss: Literal["local", "gathered"] = "local"  # gathered: features of all processes, with gradients (v2)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    grad_clip: float | None = None
    grad_checkpointing: bool = False
    seed: int = 42
    eval_every: int = 1  # epochs between evaluations (0: only at the end)
    log_every: int = 10  # steps between metrics.jsonl lines
    best: BestMetric = field(default_factory=BestMetric)
    report_to: list[Literal["wandb", "tensorboard"]] = field(default_factory=list)

    def validate(self, prefix: str = "train") -> None:
        _check(self.epochs >= 1, f"{prefix}.epochs", f"must be >= 1, got {self.epochs}")
        _check(
            self.max_steps is None or self.max_steps >= 1, f"{prefix}.max_steps", f"must be >= 1, got {self.max_steps}"
        )
        _check(self.batch_size >= 2, f"{prefix}.batch_size", f"must be >= 2 (contrastive loss), got {self.batch_size}")
        _check(self.grad_accum >= 1, f"{prefix}.grad_accum", f"must be >= 1, got {self.grad_accum}")
        _check(
            self.micro_batch_size is None or 1 <= self.micro_batch_size <= self.batch_size,
            f"{prefix}.micro_batch_size",
            f"must be between 1 and train.batch_size={self.batch_size} (or null), got {self.micro_batch_size}",
        )
        _check(self.lr > 0, f"{prefix}.lr", f"must be > 0, got {self.lr}")
        _check(
            self.scheduler != "cosine" or 0 <= self.min_lr <= self.lr,
            f"{prefix}.min_lr",
            f"must be in [0, train.lr={self.lr}] for the cosine schedule, got {self.min_lr}",
        )
        _check(self.weight_decay >= 0, f"{prefix}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(
            0 < self.onecycle_pct_start < 1,
            f"{prefix}.onecycle_pct_start",
            f"must be in (0, 1), got {self.onecycle_pct_start}",
        )
        _check(self.onecycle_div_factor >= 1, f"{prefix}.onecycle_div_factor", "must be >= 1")
        _check(
            self.lr_reference_batch is None or self.lr_reference_batch >= 1,
            f"{prefix}.lr_reference_batch",
            f"must be >= 1, got {self.lr_reference_batch}",
        )
        _check(
            self.grad_clip is None or self.grad_clip > 0, f"{prefix}.grad_clip", f"must be > 0, got {self.grad_clip}"
        )
        _check(self.eval_every >= 0, f"{prefix}.eval_every", f"must be >= 0, got {self.eval_every}")
        _check(self.log_every >= 1, f"{prefix}.log_every", f"must be >= 1, got {self.log_every}")
        self.best.validate(f"{prefix}.best")


# ----------------------------------------------------------------------------------------------- eval


@dataclass(frozen=True)
class EvalConfig:
    """Retrieval evaluation (docs/method.md, Evaluation) and the embedding export that feeds it."""

    split: Literal["val", "test"] = "val"
    k: list[int] = field(default_factory=lambda: [1, 3, 5])
    levels: list[Level] = field(default_factory=lambda: list(LEVELS))
    batch_size: int = 256
    dtype: Literal["float32", "float64"] = "float32"  # float64: byte-compatible with the released files
    autocast: Literal["none", "bf16"] = "none"
    merge_lora: bool = True  # encode with LoRA folded into the base weights: faster, equal within float rounding
    search: Literal["screened", "exact"] = "screened"  # screened: faiss's lists at bf16 speed (docs/lowp_search.md)

    def validate(self, prefix: str = "eval") -> None:
        _check(
            len(self.k) >= 1 and all(k >= 1 for k in self.k), f"{prefix}.k", f"must be positive integers, got {self.k}"
        )
        _check(len(self.levels) >= 1, f"{prefix}.levels", "must name at least one level")
        _check(self.batch_size >= 1, f"{prefix}.batch_size", f"must be >= 1, got {self.batch_size}")


# ------------------------------------------------------------------------------------------------ run


@dataclass(frozen=True)
class RunConfig:
    """Everything one experiment needs. `runs/NAME/config.yaml` is this, resolved."""

    name: str = "run"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> RunConfig:
        self.data.validate("data")
        self.model.validate("model")
        self.train.validate("train")
        self.eval.validate("eval")
        if "dna" in self.model.modalities:
            expected = 4**self.data.dna.k + 3
            _check(
                self.model.dna.vocab_size == expected,
                "model.dna.vocab_size",
                f"must be 4**k + 3 = {expected} for data.dna.k={self.data.dna.k}, got {self.model.dna.vocab_size}",
            )
            _check(
                self.data.dna.n_tokens <= self.model.dna.max_position_embeddings,
                "data.dna.max_len",
                f"gives {self.data.dna.n_tokens} tokens, more than model.dna.max_position_embeddings="
                f"{self.model.dna.max_position_embeddings}",
            )
        if "text" in self.model.modalities:
            _check(
                self.data.text.max_len <= self.model.text.max_position_embeddings,
                "data.text.max_len",
                f"exceeds model.text.max_position_embeddings={self.model.text.max_position_embeddings}",
            )
        if "image" in self.model.modalities:
            _check(
                self.data.image.crop == self.model.image.image_size,
                "data.image.crop",
                f"must equal model.image.image_size={self.model.image.image_size}, got {self.data.image.crop}",
            )
        for q in (self.train.best.query, self.train.best.key):
            _check(
                q in self.model.modalities or q in ("avg", "concat", "all"),
                "train.best",
                f"names feature {q!r}, which this model does not produce ({', '.join(self.model.modalities)})",
            )
        return self
