"""Skipping the padding: a padded batch's token-wise work done on its real tokens only.

A batch of B texts is padded to its longest, L tokens. On SST-2's short texts, batches of 32
are padded to 40 tokens on average for 13 real ones: two thirds of every (B, L, E) activation is
padding. All of BERT's layers but one work token by token (the dense layers, layer norm, GELU,
dropout), so on the (N, E) rows of the batch's N real tokens they compute the same rows as on
the whole (B, L, E) batch, and skip the rest. Only the attention needs the batch's layout, to
know which tokens are one text's: q, k and v are scattered back into (B, L, E) zeros (their
padded keys are masked, so those zeros are never attended to), and its output gathered again.

    (B, L, E)  --unpad-->  (N, E)  --dense, layer norm, GELU, dropout-->  (N, E)
    attention:  (N, E) q, k, v  --pad-->  (B, H, L, D)  --attention-->  --unpad-->  (N, E)

What is skipped is what nothing reads: a padded position's output (the heads read the [CLS]
position and the labelled tokens; sentence pooling masks the padding). Each sequence's first
position is kept even if padded, for the pooler, and ``keep`` adds positions the caller reads.
Hugging Face's BERT computes every position; FlashAttention's ``bert_padding`` (unpad_input,
pad_input), MosaicBERT and ModernBERT skip the padding the same way.
"""
from .. import backend, cuda, ops


class Padding:
    """Where a (B, L) batch's computed rows are: ``indices`` (N,), their row numbers in the flat
    (B * L) batch, ascending, and ``key_mask`` (B, L), the attention mask of real tokens."""

    def __init__(self, key_mask, kept):
        self.key_mask = key_mask
        self.batch, self.length = key_mask.shape
        self.indices = backend.array_module(kept).flatnonzero(kept.reshape(-1))  # (N,)
        self.positions = self.indices % self.length  # (N,) position ids

    @classmethod
    def of(cls, key_mask, keep=None):
        """The Padding of ``key_mask`` (B, L), True or 1 for real tokens, or None when there is nothing to
        skip (no mask, an empty one, or every position kept) and inside a CUDA-graph capture (whose
        shapes are fixed, and N is not). Kept: the real tokens, each sequence's first position, and
        ``keep`` (B, L) bool."""
        if key_mask is None or key_mask.size == 0 or (backend.on_device(key_mask) and cuda.is_capturing()):
            return None
        key_mask = key_mask != 0
        kept = key_mask.copy()
        kept[:, 0] = True
        if keep is not None:
            kept |= keep
        return None if bool(kept.all()) else cls(key_mask, kept)

    def unpad(self, x):
        """(B, L, ...) -> (N, ...): the kept rows of a Tensor (with gradient) or of an array (ids)."""
        flat = x.reshape((self.batch * self.length,) + tuple(x.shape[2:]))
        return ops.gather_rows(flat, self.indices) if isinstance(x, ops.Tensor) else flat[self.indices]

    def pad(self, x):
        """(N, ...) Tensor -> (B, L, ...), zeros at the skipped positions."""
        rows = ops.scatter_rows(x, self.indices, self.batch * self.length)
        return rows.reshape((self.batch, self.length) + tuple(x.shape[1:]))
