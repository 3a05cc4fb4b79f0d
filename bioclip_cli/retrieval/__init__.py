"""Retrieval: nearest-neighbour search (faiss, GPU when present) and the paper's top-k metrics.

Pure numpy in, numbers out; shared by `bioclip eval` and the evaluation inside training.
"""

from bioclip_cli.retrieval.metrics import (
    encode_labels,
    first_hit_rank,
    harmonic_mean,
    harmonic_means,
    per_class_accuracy,
    topk_accuracy,
)
from bioclip_cli.retrieval.search import (
    FlatIndex,
    IVFIndex,
    exact_search,
    ivf_search,
    l2_normalize,
    recall_at_k,
)

__all__ = [
    "FlatIndex",
    "IVFIndex",
    "encode_labels",
    "exact_search",
    "first_hit_rank",
    "harmonic_mean",
    "harmonic_means",
    "ivf_search",
    "l2_normalize",
    "per_class_accuracy",
    "recall_at_k",
    "topk_accuracy",
]
