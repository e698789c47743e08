"""Multi-head self-attention ("Attention Is All You Need", section 3.2), as BERT computes it.

    x (B, L, E)  ->  q, k, v = x Wq^T + bq, x Wk^T + bk, x Wv^T + bv        each (B, L, E)
                 ->  split E = H * D into H heads                           each (B, H, L, D)
                 ->  head_h = softmax(q_h k_h^T / sqrt(D) + mask) v_h       (B, H, L, D)
                 ->  heads merged back                                      (B, L, E)

The mask keeps a query from attending to padding: ``key_mask`` (B, L) is True (or 1, as Hugging
Face's ``attention_mask``) where a key is a real token and False (0) where it is padding. (torch's
``key_padding_mask`` has the opposite sense; this one follows Hugging Face and minillm's kernel.)

The equation is computed two ways, with the same numbers up to rounding:
  - ``reference_attention``: the equation in plain ops (matmul, masked_fill, softmax, dropout),
    which keeps the (B, H, L, L) probabilities in the graph. ``output_attentions=True`` takes this
    path (the probabilities are what it returns), and the tests hold the fused kernel to it. It is
    written once, as ``F.reference_attention`` in minillm/nn/functional.py, for any mask torch takes:
    F.scaled_dot_product_attention runs it too, for the masks the fused op does not take.
  - the fused op ``minillm.ops.attention`` (kernels/attention.py): one kernel, dropout inside, that
    never keeps the (L, L) probabilities for backward. Every other call, training included, takes it.

A batch whose padding is skipped (minillm/nn/padding.py) comes as x (N, E), its N real tokens, with
its Padding in place of the key mask: q, k and v are projected on the N rows, and the fused attention
runs on each sequence's rows in place, as long as the sequence (ops.unpadded_attention).

The output projection is not part of this module: in BERT it belongs to the next block,
``attention.output.dense``, which also adds the residual and normalizes.
"""
import math

from .. import backend, ops
from ..tensor import Tensor
from . import functional as F
from .layers import Dropout, Linear
from .module import Module
from .padding import Padding


class MultiHeadAttention(Module):
    """Self-attention with ``num_heads`` heads over ``embed_dim`` features; its weights are named as
    Hugging Face's BertSelfAttention names them, ``query``, ``key`` and ``value``, each (E, E).

    ``dropout`` drops attention probabilities while training, as BERT does. On the fused path the
    op drops them: its mask is a hash of (seed, element index), regenerated in the backward instead
    of stored (see minillm/kernels/dropout.py), and each call's seed is drawn from minillm's seeded
    generator. On the reference path ``self.dropout`` (an nn.Dropout) drops them.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"{type(self).__name__}: embed_dim {embed_dim} is not a multiple of num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.scale = 1 / math.sqrt(self.head_dim)
        self.query = Linear(embed_dim, embed_dim)
        self.key = Linear(embed_dim, embed_dim)
        self.value = Linear(embed_dim, embed_dim)
        self.dropout = Dropout(dropout)

    def forward(self, x, key_mask=None, output_attentions=False):
        """x: (B, L, E); key_mask: (B, L) bool or 0/1, or None (attend everywhere); or x (N, E) and
        key_mask a Padding (see unpadded). Returns (context (B, L, E), probabilities (B, H, L, L) or
        None); the probabilities, for study, only when output_attentions is True."""
        if isinstance(key_mask, Padding):
            return self.unpadded(x, key_mask, output_attentions)
        key_mask = self.check_inputs(x, key_mask)
        q, k, v = (self.split_heads(projection(x)) for projection in (self.query, self.key, self.value))
        context, probs = self.attention(q, k, v, key_mask, output_attentions)
        return self.merge_heads(context), probs

    def unpadded(self, x, padding, output_attentions=False):
        """x (N, E): the computed rows of a (B, L) batch whose padding is skipped, placed by ``padding``
        (minillm/nn/padding.py). Returns (context (N, E), None): q, k, v projected on the N rows, and
        the fused attention run on each sequence's rows (ops.unpadded_attention)."""
        if output_attentions:
            raise ValueError(f"{type(self).__name__}: output_attentions needs the padded batch, (B, L, E) with "
                             f"its (B, L) mask, not its unpadded rows (BertModel computes every position then)")
        if x.ndim != 2 or x.shape[1] != self.embed_dim or x.shape[0] != len(padding.indices):
            raise ValueError(f"{type(self).__name__}: x must be (N, {self.embed_dim}) with N = "
                             f"{len(padding.indices)}, the rows its Padding keeps, got shape {x.shape}")
        dropout_p = self.dropout.p if self.training else 0.0
        q, k, v = (projection(x) for projection in (self.query, self.key, self.value))
        return ops.unpadded_attention(q, k, v, padding, self.num_heads, self.scale, dropout_p), None

    def split_heads(self, t):
        """(B, L, E) -> (B, H, L, D): head h gets features h*D .. h*D + D - 1. A view, not a copy
        (the compiled kernel reads the heads in place)."""
        batch, length = t.shape[:2]
        return t.reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, t):
        """(B, H, L, D) -> (B, L, E): the heads side by side again."""
        batch, _, length, _ = t.shape
        return t.transpose(1, 2).reshape(batch, length, self.embed_dim)

    def attention(self, q, k, v, key_mask=None, output_attentions=False):
        """softmax(q k^T / sqrt(D) + mask) v, dropout on the probabilities while training.
        q, k, v: (B, H, L, D); key_mask: (B, L) bool or None.
        Returns (context (B, H, L, D), probabilities (B, H, L, L) or None): the reference path
        with output_attentions, the fused op otherwise."""
        if output_attentions:
            return self.reference_attention(q, k, v, key_mask)
        dropout_p = self.dropout.p if self.training else 0.0
        return ops.attention(q, k, v, key_mask, None, self.scale, dropout_p), None  # seed: minillm's generator

    def reference_attention(self, q, k, v, key_mask=None):
        """The equation in plain ops, as ``F.reference_attention`` (minillm/nn/functional.py) writes
        it: ``F.attention_probs`` with the key mask as a (B, 1, 1, L) boolean mask and the module's
        scale, then the module's nn.Dropout. q, k, v: (B, H, L, D); key_mask: (B, L) bool or None.
        Returns (context (B, H, L, D), probabilities (B, H, L, L), before dropout). A query whose
        keys are all masked gets probabilities 0 and a context of 0 (softmax's rule for a row of -inf)."""
        probs = F.attention_probs(q, k, None if key_mask is None else key_mask[:, None, None, :], self.scale)
        return self.dropout(probs) @ v, probs

    def check_inputs(self, x, key_mask):
        """The key mask as a (B, L) boolean array on x's device (None stays None), after checking
        that x is (B, L, E): errors name the argument and the shapes."""
        name = type(self).__name__
        if x.ndim != 3 or x.shape[2] != self.embed_dim:
            raise ValueError(f"{name}: x must be (B, L, {self.embed_dim}), got shape {x.shape}")
        if key_mask is None:
            return None
        m = backend.array_module(x.data).asarray(key_mask.data if isinstance(key_mask, Tensor) else key_mask)
        if m.shape != x.shape[:2]:
            raise ValueError(f"{name}: key_mask must be (B, L) = {x.shape[:2]}, got shape {tuple(m.shape)}")
        if m.dtype.kind not in "biu":
            raise TypeError(f"{name}: key_mask must be boolean or 0/1 integers, got dtype {m.dtype}")
        return m != 0

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"
