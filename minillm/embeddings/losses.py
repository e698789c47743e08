"""MultipleNegativesRankingLoss: sentence-transformers' contrastive loss with in-batch negatives.

For a batch of B (anchor, positive) pairs, every other pair's positive is a negative for anchor i:

    a = encoder(anchors) (B, E),  p = encoder(positives) (B, E)
    scores[i, j] = scale * cos(a_i, p_j)                               (B, B), scale 20 = 1 / temperature 0.05
    loss = cross_entropy(scores, [0, 1, ..., B-1])                     the right positive is the diagonal
         = mean_i ( log sum_j exp(scores[i, j]) - scores[i, i] )

dL/dscores = (softmax(scores) - I) / B, row by row; through cos it reaches both encoders' outputs
(the same weights: the encoder runs twice). The model returns an output with ``.loss``, so the
Trainer (minillm/training/loop.py) trains it like any other model, with PairDataset's collator.
"""
import dataclasses

import numpy

from ..nn import Module
from ..nn import functional as F
from ..tensor import Tensor
from .pooling import cos_sim


@dataclasses.dataclass
class SentenceLossOutput:
    loss: Tensor = None       # scalar
    scores: Tensor = None     # (B, B): scale * cos(anchor_i, positive_j)


class MultipleNegativesRankingLoss(Module):
    """``model``: a SentenceEncoder (its weights are this module's, under ``model.``); ``scale``:
    the cosine similarities' multiplier.

    forward(anchor, positive): two batches of model inputs (dicts with input_ids, attention_mask,
    token_type_ids: (B, L_a) and (B, L_p)) -> SentenceLossOutput(loss, scores)."""

    def __init__(self, model, scale=20.0):
        super().__init__()
        if not scale > 0:
            raise ValueError(f"MultipleNegativesRankingLoss: scale must be positive, got {scale!r}")
        self.model, self.scale = model, scale

    def forward(self, anchor, positive):
        anchors, positives = self.model(**anchor), self.model(**positive)    # (B, E) each
        if anchors.shape[0] != positives.shape[0]:
            raise ValueError(f"MultipleNegativesRankingLoss: {anchors.shape[0]} anchors but "
                             f"{positives.shape[0]} positives; each anchor needs its positive")
        scores = cos_sim(anchors, positives) * self.scale                     # (B, B)
        labels = numpy.arange(scores.shape[0])                                # anchor i's positive is i
        return SentenceLossOutput(F.cross_entropy(scores, labels), scores)

    def save_pretrained(self, folder):
        """The trained encoder as a sentence-transformers folder (SentenceEncoder.save_pretrained)."""
        self.model.save_pretrained(folder)
