"""Semantic search: the corpus texts nearest a query by cosine similarity, the corpus embedded once.

    hits = semantic_search(queries, corpus, top_k=5)   [[{"corpus_id": 3, "score": 0.71}, ...], ...]

corpus_embeddings caches a corpus file's embeddings beside it (``texts.txt`` ->
``texts.txt.minillm-embeddings.npz``), keyed by a hash of the model folder's files (weights, configs,
tokenizer) and of the corpus file: a second query with the same model and file reads the cache;
another model or an edited file embeds the corpus again and replaces it (written atomically).
"""
import hashlib
import io
import os

import numpy

from ..safetensors_io import atomic_write
from ..tensor import Tensor, no_grad
from .pooling import cos_sim

MODEL_FILES = ("config.json", "model.safetensors", "modules.json", "sentence_bert_config.json",
               os.path.join("1_Pooling", "config.json"), "tokenizer.json", "vocab.txt", "tokenizer_config.json")
CACHE_SUFFIX = ".minillm-embeddings.npz"


def semantic_search(query_embeddings, corpus_embeddings, top_k=5):
    """For each query, the ``top_k`` corpus rows by cosine similarity, best first, as
    sentence_transformers.util.semantic_search: [{"corpus_id": int, "score": float}, ...] per query."""
    with no_grad():
        scores = cos_sim(*(Tensor(numpy.atleast_2d(x).astype(numpy.float32))
                           for x in (query_embeddings, corpus_embeddings))).numpy()    # (Q, N)
    k = min(top_k, scores.shape[1])
    best = numpy.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[{"corpus_id": int(j), "score": float(row[j])} for j in ids] for row, ids in zip(scores, best)]


def read_texts(path):
    """One text per line (line i is text i; the line break is not part of it)."""
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def cache_key(model_folder, corpus_path):
    """sha256 of the model folder's files (those of MODEL_FILES it has) and of the corpus file's bytes."""
    digest = hashlib.sha256()
    paths = [os.path.join(model_folder, name) for name in MODEL_FILES] + [corpus_path]
    for path in paths:
        if os.path.isfile(path):
            digest.update(os.path.basename(path).encode() + b"\0")
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def corpus_embeddings(encoder, model_folder, corpus_path, batch_size=32):
    """(texts, embeddings (N, E) float32) of ``corpus_path``, from the cache beside it when its key
    matches, else encoded and cached. Returns (texts, embeddings, read_from_cache)."""
    texts = read_texts(corpus_path)
    key, cache = cache_key(model_folder, corpus_path), corpus_path + CACHE_SUFFIX
    if os.path.isfile(cache):
        with numpy.load(cache) as saved:
            if str(saved["key"]) == key and len(saved["embeddings"]) == len(texts):
                return texts, saved["embeddings"], True
    embeddings = encoder.encode(texts, batch_size=batch_size)
    buffer = io.BytesIO()
    numpy.savez(buffer, key=numpy.array(key), embeddings=embeddings)
    atomic_write(cache, buffer.getvalue())
    return texts, embeddings, False
