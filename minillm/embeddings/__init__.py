"""Sentence embeddings: all-MiniLM-L6-v2 as sentence-transformers uses it, and semantic search.

    pooling.py           Pooling (cls, mean, max over the real tokens), Normalize, normalize, cos_sim
    sentence_encoder.py  SentenceEncoder: a sentence-transformers folder; from_pretrained, encode,
                         save_pretrained
    losses.py            MultipleNegativesRankingLoss: in-batch negatives, trained by the Trainer
    pairs.py             PairDataset, (anchor, positive) texts read from a file, and their collator
    search.py            semantic_search, and corpus embeddings cached beside the corpus

    from minillm.embeddings import SentenceEncoder
    encoder = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")
    vectors = encoder.encode(["A man is eating food.", "Someone is eating."])   # (2, 384) float32
"""
from .losses import MultipleNegativesRankingLoss  # noqa: F401
from .pairs import PairDataset  # noqa: F401
from .pooling import Normalize, Pooling, cos_sim, normalize  # noqa: F401
from .search import corpus_embeddings, semantic_search  # noqa: F401
from .sentence_encoder import SentenceEncoder  # noqa: F401
