"""From token vectors to one sentence vector: sentence-transformers' Pooling and Normalize modules.

    token_embeddings (B, L, E), attention_mask (B, L)  --Pooling-->  (B, k E)  --Normalize-->  unit length

Pooling reads its folder's config.json (``1_Pooling/config.json``: pooling_mode_mean_tokens, ...);
with several modes on, their vectors are concatenated in sentence-transformers' order (cls, max,
mean, mean_sqrt_len_tokens). Every mode honours the mask, so padding changes nothing:

    cls                    h[:, 0]                                    the [CLS] token (right padding)
    max                    max over the real tokens l of h[:, l]      padding set to -inf first
    mean                   sum_l m_l h_l / max(sum_l m_l, 1e-9)       m = attention_mask
    mean_sqrt_len_tokens   sum_l m_l h_l / sqrt(max(sum_l m_l, 1e-9))

All of it is plain ops on Tensors, so a loss on the sentence vectors trains the encoder below.
"""
import json
import os

import numpy

from .. import ops
from ..nn import Module
from ..safetensors_io import atomic_write

MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens")  # sentence-transformers' concatenation order
CONFIG_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
               "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens"}
UNSUPPORTED = ("pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")
NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize's eps


class Pooling(Module):
    """(B, L, E) token vectors and their (B, L) mask -> (B, len(modes) * E) sentence vectors.

    modes: a subset of MODES, applied in MODES' order. No parameters: its gradient is the mask's
    average (mean), a one-hot at the largest real token (max), or a one-hot at [CLS] (cls)."""

    def __init__(self, word_embedding_dimension, modes=("mean",)):
        super().__init__()
        unknown = [m for m in modes if m not in MODES]
        if unknown or not modes:
            raise ValueError(f"Pooling: modes must be a non-empty subset of {MODES}, got {tuple(modes)}")
        self.word_embedding_dimension = word_embedding_dimension
        self.modes = tuple(m for m in MODES if m in modes)

    @classmethod
    def from_config(cls, config, path, hidden_size):
        """From sentence-transformers' 1_Pooling/config.json, read into ``config`` from ``path``: the
        pooling_mode_* flags (older files) or "pooling_mode" (a name or a list of names, newer files).
        Its word_embedding_dimension must be the model's hidden_size (what it pools)."""
        if not isinstance(config, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(config).__name__}")
        on = [key for key in UNSUPPORTED if config.get(key)]
        named = config.get("pooling_mode")
        modes = ([named] if isinstance(named, str) else list(named)) if named else \
            [mode for key, mode in CONFIG_KEYS.items() if config.get(key)]
        if on or any(m not in MODES for m in modes):
            raise ValueError(f"{path}: pooling {on or modes} is not supported (supported: {', '.join(MODES)})")
        dimension = config.get("word_embedding_dimension", config.get("embedding_dimension", hidden_size))
        if dimension != hidden_size:
            raise ValueError(f"{path}: word_embedding_dimension={dimension!r} but the model's hidden_size is "
                             f"{hidden_size}: the pooling config does not belong to this model")
        return cls(dimension, modes or ["mean"])

    def get_config_dict(self):
        """The config.json sentence-transformers writes for these modes."""
        config = {"word_embedding_dimension": self.word_embedding_dimension}
        config.update({key: mode in self.modes for key, mode in CONFIG_KEYS.items()})
        config.update({key: False for key in UNSUPPORTED})
        config["include_prompt"] = True
        return config

    def save(self, folder):
        os.makedirs(folder, exist_ok=True)
        atomic_write(os.path.join(folder, "config.json"), json.dumps(self.get_config_dict(), indent=4) + "\n")

    def forward(self, token_embeddings, attention_mask):
        """token_embeddings (B, L, E) Tensor; attention_mask (B, L) array, 1 for tokens -> (B, k E)."""
        mask = numpy.asarray(attention_mask)[:, :, None].astype(token_embeddings.dtype)  # (B, L, 1)
        vectors = []
        for mode in self.modes:
            if mode == "cls":
                vectors.append(token_embeddings[:, 0])
            elif mode == "max":
                vectors.append(token_embeddings.masked_fill(mask == 0, -numpy.inf).max(1).values)
            else:
                counts = numpy.maximum(mask.sum(axis=1), 1e-9)                      # (B, 1) real tokens
                total = (token_embeddings * mask).sum(1)                             # (B, E)
                vectors.append(total / (counts if mode == "mean" else numpy.sqrt(counts)))
        return vectors[0] if len(vectors) == 1 else ops.cat(vectors, dim=-1)


def normalize(x, eps=NORMALIZE_EPS):
    """x / max(||x||_2, eps) along the last axis (torch.nn.functional.normalize), (B, E) -> (B, E).

    The gradient, for ||x|| > eps and n = x / ||x||:  dL/dx = (g - n (n . g)) / ||x||, the part of g
    orthogonal to x, scaled: the ops below compute it through sqrt, sum and div."""
    norm = (x * x).sum(-1, keepdim=True).sqrt()
    return x / ops.where(norm.data > eps, norm, eps)


def cos_sim(a, b):
    """Cosine similarities of every row of a (N, E) with every row of b (M, E): (N, M) Tensor,
    normalize(a) @ normalize(b)^T (sentence_transformers.util.cos_sim)."""
    return normalize(a) @ normalize(b).transpose(0, 1)


class Normalize(Module):
    """sentence-transformers' Normalize module: each sentence vector scaled to unit length."""

    def forward(self, sentence_embedding):
        return normalize(sentence_embedding)
