"""Skipping the padding: a padded batch's token-wise work done on its real tokens only.

A batch of B texts is padded to its longest, L tokens. On SST-2's short texts, batches of 32
are padded to 40 tokens on average for 13 real ones: two thirds of every (B, L, E) activation is
padding. All of BERT's layers but one work token by token (the dense layers, layer norm, GELU,
dropout), so on the (N, E) rows of the batch's N real tokens they compute the same rows as on
the whole (B, L, E) batch, and skip the rest. Only the attention needs to know which tokens are
one text's. It runs on groups of sequences of about the same width (``groups``: widths within a
factor of 2, where a sequence's width runs to its last computed position): each group's q, k and
v are scattered into (B_g, H, L_g, D) zeros (a zero key is masked, a zero query's output
discarded), so a short text costs its group's L_g^2, not the batch's L^2 (ops.unpadded_attention).

    (B, L, E)  --unpad-->  (N, E)  --dense, layer norm, GELU, dropout-->  (N, E)
    attention:  (N, E) q, k, v  --per group-->  (B_g, H, L_g, D)  --attention-->  (N, E)

What is skipped is what nothing reads: a padded position's output (the heads read the [CLS]
position and the labelled tokens; sentence pooling masks the padding). Each sequence's first
position is kept even if padded, for the pooler, and ``keep`` adds positions the caller reads.
Hugging Face's BERT computes every position. FlashAttention's ``bert_padding`` (unpad_input,
pad_input) and its variable-length attention, MosaicBERT and ModernBERT skip the padding too, with
an attention kernel that takes the sequences' lengths where this one takes groups of them.
"""
import collections

import numpy

from .. import backend, cuda, ops


# Sequences attended to together: ``rows`` (n,), their computed rows (of the N), ``slots`` (n,), where
# those land in the group's flat (batch * length) layout, and ``key_mask`` (batch, length).
AttentionGroup = collections.namedtuple("AttentionGroup", ["rows", "slots", "batch", "length", "key_mask"])


class Padding:
    """Where a (B, L) batch's computed rows are: ``indices`` (N,), their row numbers in the flat
    (B * L) batch, ascending; ``key_mask`` (B, L), the attention mask of real tokens; ``groups``,
    the AttentionGroups that cover the N rows once each."""

    def __init__(self, key_mask, kept):
        self.key_mask = key_mask
        self.batch, self.length = key_mask.shape
        indices = numpy.flatnonzero(kept.reshape(-1))  # (N,); kept (B, L) is on the host
        xp = backend.array_module(key_mask)
        self.indices, self.positions = xp.asarray(indices), xp.asarray(indices % self.length)  # position ids
        self.groups = [AttentionGroup(*(xp.asarray(a) for a in (rows, slots)), len(members), width,
                                      key_mask[xp.asarray(members), :width])
                       for rows, slots, members, width in _groups(kept, indices)]

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


def _groups(kept, indices):
    """(rows, slots, sequences, width) per group of the sequences whose widths (last kept position
    + 1) round up to the same power of 2; the group's width is its widest sequence's."""
    length = kept.shape[1]
    widths = length - numpy.argmax(kept[:, ::-1], axis=1)  # every row keeps its first position
    buckets = numpy.ceil(numpy.log2(widths)).astype(numpy.int64)
    sequence, position = numpy.divmod(indices, length)  # of each computed row
    groups = []
    for bucket in numpy.unique(buckets):
        members = numpy.flatnonzero(buckets == bucket)
        local = numpy.full(len(kept), -1)
        local[members] = numpy.arange(len(members))  # each member's place in the group
        rows = numpy.flatnonzero(local[sequence] >= 0)
        width = int(widths[members].max())
        groups.append((rows, local[sequence[rows]] * width + position[rows], members, width))
    return groups
