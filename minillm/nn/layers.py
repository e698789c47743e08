"""The basic layers: Linear, Embedding, LayerNorm, Dropout. Defaults and initialization as torch.nn."""
import math

import numpy

from .. import random
from ..ops.nn import Embedding as EmbeddingOp, add_layer_norm
from . import functional as F
from .module import Module, Parameter


class Linear(Module):
    """y = x W^T + b.  x: (..., in_features) -> y: (..., out_features); W: (out, in) as torch and HF.
    Initialized as torch: W and b uniform in +-1/sqrt(in_features)."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features) if in_features else 0
        uniform = random.generator().uniform
        self.weight = Parameter(uniform(-bound, bound, (out_features, in_features)).astype(numpy.float32))
        self.bias = Parameter(uniform(-bound, bound, out_features).astype(numpy.float32)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: integer ids (...) -> rows (..., embedding_dim). Initialized N(0, 1), as torch;
    the ``padding_idx`` row starts at zero and gets no gradient."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        weight = random.normal((num_embeddings, embedding_dim))
        if padding_idx is not None:
            weight[padding_idx] = 0
        self.weight = Parameter(weight)

    def forward(self, ids, checked=False):
        """ids: integers (...) -> (..., embedding_dim). F.embedding checks that each id is in range
        (on a GPU that check waits for the ids); checked=True says the caller has already checked
        them (BERT's check_inputs) and reads the table directly, through the same op."""
        if checked:
            return EmbeddingOp.apply(ids, self.weight, padding_idx=self.padding_idx)
        return F.embedding(ids, self.weight, self.padding_idx)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Normalize the last axis to mean 0, variance 1, then scale by weight and shift by bias."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps = eps
        self.weight = Parameter(numpy.ones(self.normalized_shape, numpy.float32)) if elementwise_affine else None
        self.bias = Parameter(numpy.zeros(self.normalized_shape, numpy.float32)) if elementwise_affine else None

    def forward(self, x, residual=None):
        """LayerNorm(x); with ``residual``, LayerNorm(x + residual), the add fused into the norm's pass
        (a transformer's Add & Norm: BERT's BertSelfOutput and BertOutput)."""
        if residual is not None:
            return add_layer_norm(x, residual, self.normalized_shape, self.weight, self.bias, self.eps)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"


class Dropout(Module):
    """Zero each element with probability p while training (scaling the rest by 1/(1-p)); identity in eval."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"
