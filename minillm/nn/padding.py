"""Skipping the padding: a padded batch's token-wise work done on its real tokens only.

A batch of B texts is padded to its longest, L tokens. On SST-2's short texts, batches of 32
are padded to 40 tokens on average for 13 real ones: two thirds of every (B, L, E) activation is
padding. All of BERT's layers but one work token by token (the dense layers, layer norm, GELU,
dropout), so on the (N, E) rows of the batch's N real tokens they compute the same rows as on
the whole (B, L, E) batch, and skip the rest. Only the attention needs to know which tokens are
one text's: the rows are in batch order, so sequence b's are rows cu_seqlens[b] : cu_seqlens[b + 1]
(``cu_seqlens``), and the attention runs on each sequence's rows in place, attending to its real
tokens (``key_rows``), so a short text costs its own n^2, not the batch's L^2
(ops.unpadded_attention, kernels/attention_varlen.py).

    (B, L, E)  --unpad-->  (N, E)  --dense, layer norm, GELU, dropout-->  (N, E)
    attention:  (N, E) q, k, v  --each sequence's rows-->  (N, E)

What is skipped is what nothing reads: a padded position's output (the heads read the [CLS]
position and the labelled tokens; sentence pooling masks the padding). Each sequence's first
position is kept even if padded, for the pooler, and ``keep`` adds positions the caller reads.
Hugging Face's BERT computes every position. FlashAttention's ``bert_padding`` (unpad_input,
pad_input) and its variable-length attention (cu_seqlens), MosaicBERT and ModernBERT skip the
padding the same way.
"""
import numpy

from .. import backend, cuda, ops


class Padding:
    """Where a (B, L) batch's computed rows are: ``indices`` (N,), their row numbers in the flat
    (B * L) batch, ascending; ``positions`` (N,), their position ids; ``cu_seqlens`` (B + 1,), host
    int64, sequence b's rows of the N being cu_seqlens[b] : cu_seqlens[b + 1]; ``key_rows`` (N,),
    the attention mask (key_mask, (B, L), True for real tokens) at each computed row: a position
    kept for the caller but padding is a query, not a key."""

    def __init__(self, key_mask, kept):
        self.batch, self.length = key_mask.shape
        indices = numpy.flatnonzero(kept.reshape(-1))  # (N,); kept (B, L) is on the host
        self.cu_seqlens = numpy.concatenate([[0], numpy.cumsum(kept.sum(axis=1))]).astype(numpy.int64)
        xp = backend.array_module(key_mask)
        self.indices, self.positions = xp.asarray(indices), xp.asarray(indices % self.length)  # position ids
        self.key_rows = key_mask.reshape(-1)[self.indices]

    @classmethod
    def of(cls, key_mask, keep=None):
        """The Padding of ``key_mask`` (B, L), True or 1 for real tokens, or None when there is nothing to
        skip (no mask, an empty one, or every position kept) and inside a CUDA-graph capture (whose
        shapes are fixed, and N is not). Kept: the real tokens, each sequence's first position, and
        ``keep`` (B, L) bool. On a GPU the kept positions are copied to the host: one wait per batch."""
        if key_mask is None or key_mask.size == 0 or (backend.on_device(key_mask) and cuda.is_capturing()):
            return None
        key_mask = key_mask != 0
        kept = key_mask.copy()
        kept[:, 0] = True
        if keep is not None:
            kept |= keep
        kept = backend.to_host(kept)  # the layout is worked out on the host
        return None if kept.all() else cls(key_mask, kept)

    def unpad(self, x):
        """(B, L, ...) -> (N, ...): the kept rows of a Tensor (with gradient) or of an array (ids)."""
        flat = x.reshape((self.batch * self.length,) + tuple(x.shape[2:]))
        return ops.gather_rows(flat, self.indices) if isinstance(x, ops.Tensor) else flat[self.indices]

    def pad(self, x):
        """(N, ...) Tensor -> (B, L, ...), zeros at the skipped positions."""
        rows = ops.scatter_rows(x, self.indices, self.batch * self.length)
        return rows.reshape((self.batch, self.length) + tuple(x.shape[1:]))

