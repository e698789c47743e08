"""Datasets: the torch-style base class, and labeled texts tokenized once up front.

Tokenizing once, without padding, is what makes dynamic padding possible: each example keeps
its own length, and a batch is padded only to its longest member (pad_batch in loader.py).
"""
import logging

import numpy

logger = logging.getLogger("minillm")


class Dataset:
    """As torch.utils.data.Dataset: anything with ``__len__`` and ``__getitem__(i)``."""

    def __len__(self):
        raise NotImplementedError

    def __getitem__(self, index):
        raise NotImplementedError


class TextClassificationDataset(Dataset):
    """Texts, or pairs of texts, tokenized to at most ``max_length`` tokens each, with their labels.

    Item i is {"input_ids": (L_i,), "token_type_ids": (L_i,), "labels": ...} with L_i <= max_length;
    a pair (``text_pairs`` given, the second texts) is [CLS] a [SEP] b [SEP] with token type 1 on b.
    labels: (N,) integer class ids, (N,) floats (regression) or (N, C) multi-hot floats (multi-label),
    kept with their dtype; ``lengths`` holds every L_i (for length bucketing). Texts longer than
    ``max_length`` tokens are cut by the tokenizer (a pair longest-first: a token off the longer text
    until it fits, as Hugging Face's tokenizer) and one logged warning says how many; ``truncated`` is
    the count. ``name`` (e.g. the file) is what that warning calls the data.
    """

    CHUNK = 1024  # texts per tokenizer call: bounds the padded (CHUNK, longest) temporary

    def __init__(self, tokenizer, texts, labels, max_length=512, name="data", text_pairs=None):
        if len(texts) != len(labels):
            raise ValueError(f"{name}: {len(texts)} texts but {len(labels)} labels")
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise ValueError(f"{name}: {len(texts)} texts but {len(text_pairs)} second texts of pairs")
        if max_length < 2:
            raise ValueError(f"{name}: max_length must be at least 2 ([CLS] and [SEP]), got {max_length}")
        labels = numpy.asarray(labels)
        self.labels = labels.astype(numpy.int64 if labels.dtype.kind in "biu" else numpy.float32)
        self.input_ids, self.token_type_ids = [], []
        self.truncated = 0
        for start in range(0, len(texts), self.CHUNK):
            chunk = slice(start, start + self.CHUNK)
            pairs = None if text_pairs is None else list(text_pairs[chunk])
            self._encode(tokenizer, list(texts[chunk]), pairs, max_length)
        self.lengths = numpy.array([len(ids) for ids in self.input_ids], dtype=numpy.int64)
        if self.truncated:
            what = "pairs" if text_pairs is not None else "texts"
            logger.warning("%s: %d of %d %s are longer than max_length=%d tokens and were truncated to it",
                           name, self.truncated, len(texts), what, max_length)

    def _encode(self, tokenizer, texts, pairs, max_length):
        """Tokenize whole, find each text's real length from the mask, and re-tokenize the long
        ones with truncation (so the tokenizer, not we, decides how to cut and re-add [SEP])."""
        full = tokenizer(texts, pairs, padding=True, truncation=False)
        long = numpy.flatnonzero(full["attention_mask"].sum(axis=1) > max_length)
        source = {i: (full, i) for i in range(len(texts))}  # text i -> (encoding, row) to take it from
        if len(long):
            cut = tokenizer([texts[i] for i in long], None if pairs is None else [pairs[i] for i in long],
                            padding=True, truncation="longest_first", max_length=max_length)
            source.update({i: (cut, row) for row, i in enumerate(long)})
        for encoding, row in source.values():
            n = int(encoding["attention_mask"][row].sum())
            self.input_ids.append(encoding["input_ids"][row, :n].copy())
            self.token_type_ids.append(encoding["token_type_ids"][row, :n].copy())
        self.truncated += len(long)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"input_ids": self.input_ids[index], "token_type_ids": self.token_type_ids[index],
                "labels": self.labels[index]}
