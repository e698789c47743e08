"""Multi-head self-attention, as in BERT ("Attention Is All You Need", section 3.2).

    x (B, L, E)  ->  q, k, v = x Wq^T + bq, x Wk^T + bk, x Wv^T + bv        each (B, L, E)
                 ->  split E = H * D into H heads                           each (B, H, L, D)
                 ->  head_h = softmax(q_h k_h^T / sqrt(D) + mask) v_h       (B, H, L, D)
                 ->  heads joined back                                      (B, L, E)

The mask keeps a query from attending to padding: ``key_mask`` (B, L) is True (or 1, as Hugging
Face's ``attention_mask``) where a key is a real token and False (0) where it is padding. (torch's
``key_padding_mask`` has the opposite sense; this one follows Hugging Face and minillm's kernel.)

The attention itself is one fused op (minillm.ops.attention): it never keeps the (L, L) matrix of
probabilities for backward, not even in training, where it also drops some of them. The output
projection is not part of this module: in BERT it belongs to the next block,
``attention.output.dense``, which also adds the residual and normalizes.
"""
import math

from .. import backend, kernels, ops
from ..tensor import Tensor
from .layers import Dropout, Linear
from .module import Module


class MultiHeadAttention(Module):
    """Self-attention with ``num_heads`` heads over ``embed_dim`` features (Hugging Face's BertSelfAttention;
    its weights are named ``query``, ``key`` and ``value``, each (E, E)).

    ``dropout`` drops attention probabilities while training, as BERT does, inside the fused op: its
    mask is a hash of (seed, element index), regenerated in the backward instead of stored (see
    minillm/kernels/dropout.py), and the seed of each call is drawn from minillm's seeded generator.
    ``self.dropout`` (an nn.Dropout) is not called; it holds p, as Hugging Face's module does.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"MultiHeadAttention: embed_dim {embed_dim} is not a multiple of num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.query = Linear(embed_dim, embed_dim)
        self.key = Linear(embed_dim, embed_dim)
        self.value = Linear(embed_dim, embed_dim)
        self.dropout = Dropout(dropout)

    def forward(self, x, key_mask=None, output_attentions=False):
        """x: (B, L, E); key_mask: (B, L) bool or 0/1, or None (attend everywhere).
        Returns (context (B, L, E), probabilities (B, H, L, L) or None). The probabilities are for
        study: computed outside the graph, only when output_attentions is True."""
        if x.ndim != 3 or x.shape[2] != self.embed_dim:
            raise ValueError(f"MultiHeadAttention: x must be (B, L, {self.embed_dim}), got shape {x.shape}")
        batch, length = x.shape[:2]
        mask = _as_key_mask(key_mask, batch, length, x.data)
        q, k, v = (self._split_heads(proj(x)) for proj in (self.query, self.key, self.value))
        scale = 1 / math.sqrt(self.head_dim)
        dropout_p = self.dropout.p if self.training else 0.0
        context = ops.attention(q, k, v, mask, None, scale, dropout_p)  # the seed: minillm's generator
        probs = None
        if output_attentions:
            probs = Tensor(kernels.attention_forward(q.data, k.data, v.data, mask, None, scale, return_probs=True)[2])
        return context.transpose(1, 2).reshape(batch, length, self.embed_dim), probs

    def _split_heads(self, t):
        """(B, L, E) -> (B, H, L, D)."""
        batch, length = t.shape[:2]
        return t.reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"


def _as_key_mask(key_mask, batch, length, like):
    """A (B, L) boolean array on ``like``'s device from a bool/0-1 array, list or Tensor; None stays None."""
    if key_mask is None:
        return None
    xp = backend.array_module(like)
    m = xp.asarray(key_mask.data if isinstance(key_mask, Tensor) else key_mask)
    if m.shape != (batch, length):
        raise ValueError(f"MultiHeadAttention: key_mask must be (B, L) = {(batch, length)}, got shape {tuple(m.shape)}")
    if m.dtype.kind not in "biu":
        raise TypeError(f"MultiHeadAttention: key_mask must be boolean or 0/1 integers, got dtype {m.dtype}")
    return m != 0
