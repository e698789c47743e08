"""Unlabelled text for pretraining: read plain text files and cut them into examples, three ways.

    lines = read_text_files(["corpus.txt"])                    # every line, checked as UTF-8
    LineByLineTextDataset(tokenizer, lines, max_length=128)    # one example per non-empty line
    GroupedTextDataset(tokenizer, lines, block_size=128)       # the lines run together, cut in blocks
    TextDatasetForNextSentencePrediction(tokenizer, lines, 128) # sentence pairs + is-next labels

Line by line keeps sentences whole (padding does the rest); grouping, as transformers'
run_mlm.py does it, tokenizes each line with its [CLS] and [SEP], concatenates them all and cuts
blocks of exactly ``block_size`` tokens (no padding: every position trains; the remainder shorter
than a block is dropped), so a block may start mid-sentence. Sentence pairs follow
google-research/bert's create_pretraining_data.py: documents are separated by blank lines,
segments are filled up to the length, and half the time the second segment is a random one from
another document (next_sentence_label 1) instead of the true continuation (0).

Each dataset keeps ``input_ids`` and ``labels`` (the next-sentence labels, empty where there are
none: the masks are drawn by the collator), which the Trainer's fingerprint hashes, and ``lengths``.
"""
import sys

import numpy

from .dataset import Dataset, TextClassificationDataset
from .language_modeling import special_token_ids


def read_text_files(paths):
    """The lines of ``paths`` (one path or several), in order, without their line ends; text that
    is not UTF-8 is an error naming the file and line."""
    lines = []
    for path in [paths] if isinstance(paths, str) else paths:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    lines.append(raw.decode("utf-8").rstrip("\r\n"))
                except UnicodeDecodeError as err:
                    raise ValueError(f"{path}:{number}: not UTF-8 text ({err})") from None
    return lines


def tokenize_lines(tokenizer, texts, max_length=sys.maxsize, name="text"):
    """Each text's ids with [CLS] and [SEP], unpadded, cut to ``max_length`` tokens (default: whole),
    by TextClassificationDataset's tokenization (one warning for the texts cut)."""
    return TextClassificationDataset(tokenizer, texts, numpy.zeros(len(texts), numpy.int64), max_length,
                                     name=name).input_ids


class TokenSequences(Dataset):
    """Examples {"input_ids": (L_i,), "token_type_ids": (L_i,)}, the base of the datasets below."""

    def __init__(self, input_ids, token_type_ids=None, labels=(), name="text"):
        if not input_ids:
            raise ValueError(f"{name}: no examples (no line with a token on it)")
        self.input_ids = input_ids
        self.token_type_ids = token_type_ids or [numpy.zeros_like(ids) for ids in input_ids]
        self.lengths = numpy.array([len(ids) for ids in input_ids], dtype=numpy.int64)
        self.labels = numpy.asarray(labels, dtype=numpy.int64)

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, index):
        return {"input_ids": self.input_ids[index], "token_type_ids": self.token_type_ids[index]}


class LineByLineTextDataset(TokenSequences):
    """One example per non-blank line: [CLS] line [SEP], cut to ``max_length`` tokens."""

    def __init__(self, tokenizer, lines, max_length=512, name="text"):
        super().__init__(tokenize_lines(tokenizer, [t for t in lines if t.strip()], max_length, name), name=name)


def group_texts(sequences, block_size):
    """run_mlm.py's group_texts: the sequences concatenated and cut into blocks of ``block_size``,
    the remainder dropped (all of it one short block when there is less than a block)."""
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    tokens = numpy.concatenate(sequences) if len(sequences) else numpy.zeros(0, numpy.int64)
    total = len(tokens) // block_size * block_size if len(tokens) >= block_size else len(tokens)
    return [tokens[i:i + block_size] for i in range(0, total, block_size)]


class GroupedTextDataset(TokenSequences):
    """The non-blank lines' [CLS] line [SEP] run together and cut into blocks of ``block_size``."""

    def __init__(self, tokenizer, lines, block_size=512, name="text"):
        super().__init__(group_texts(tokenize_lines(tokenizer, [t for t in lines if t.strip()], name=name),
                                     block_size), name=name)


class TextDatasetForNextSentencePrediction(TokenSequences):
    """[CLS] A [SEP] B [SEP] pairs with "next_sentence_label": 0 where B follows A in its document,
    1 where B is a random stretch of another document (about half the time).

    lines: sentences, one a line, documents separated by blank lines. max_length: the pair's tokens
    with its three specials; short_seq_prob: how often a pair aims at a random shorter length (as
    fine-tuning's inputs are short); seed: the pairs are drawn once, from their own Generator.
    """

    def __init__(self, tokenizer, lines, max_length=512, short_seq_prob=0.1, nsp_probability=0.5, seed=0,
                 name="text"):
        sentences = [ids[1:-1] for ids in tokenize_lines(tokenizer, [t for t in lines if t.strip()], name=name)]
        documents, start = [], 0
        for count in _document_sizes(lines):
            documents.append(sentences[start:start + count])
            start += count
        special = special_token_ids(tokenizer)
        cls_id, sep_id = special["cls_token"], special["sep_token"]
        pairs = sentence_pairs(documents, max_length - 3, numpy.random.default_rng(seed), short_seq_prob,
                               nsp_probability)
        ids = [numpy.array([cls_id, *a, sep_id, *b, sep_id], dtype=numpy.int64) for a, b, _ in pairs]
        types = [numpy.array([0] * (len(a) + 2) + [1] * (len(b) + 1), dtype=numpy.int64) for a, b, _ in pairs]
        super().__init__(ids, types, labels=[label for _, _, label in pairs], name=name)

    def __getitem__(self, index):
        return {**super().__getitem__(index), "next_sentence_label": self.labels[index]}


def _document_sizes(lines):
    """The number of non-blank lines in each blank-line-separated run of them."""
    sizes, current = [], 0
    for line in lines:
        if line.strip():
            current += 1
        elif current:
            sizes.append(current)
            current = 0
    return sizes + [current] if current else sizes


def sentence_pairs(documents, max_tokens, rng, short_seq_prob=0.1, nsp_probability=0.5):
    """google-research/bert's create_instances_from_document over every document: (A, B, label)
    with len(A) + len(B) <= max_tokens, label 1 where B is random.

    documents: lists of sentences, each a sequence of token ids. Sentences are gathered until they
    reach the target length, A is a random number of the first of them and B the rest (label 0),
    or, with probability nsp_probability or when there is one sentence only, B is taken from a
    random start in another document (label 1) and the sentences not used go back to the pool.
    """
    if max_tokens < 2:
        raise ValueError(f"max_length leaves {max_tokens} tokens for a pair after [CLS] and two [SEP]: need 2")
    pairs = []
    for index, document in enumerate(documents):
        # the length to fill, drawn once per document: sometimes short, as fine-tuning's inputs are
        target = max_tokens if rng.random() >= short_seq_prob else int(rng.integers(2, max_tokens + 1))
        chunk, length, i = [], 0, 0
        while i < len(document):
            chunk.append(document[i])
            length += len(document[i])
            if i == len(document) - 1 or length >= target:
                a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
                a = [t for sentence in chunk[:a_end] for t in sentence]
                if len(chunk) == 1 or rng.random() < nsp_probability:
                    b = _random_stretch(documents, index, target - len(a), rng)
                    i -= len(chunk) - a_end  # the sentences B did not use are read again
                    label = 1
                else:
                    b, label = [t for sentence in chunk[a_end:] for t in sentence], 0
                a, b = _truncate_pair(a, b, max_tokens, rng)
                if a and b:
                    pairs.append((a, b, label))
                chunk, length = [], 0
            i += 1
    return pairs


def _random_stretch(documents, index, length, rng):
    """Tokens of another document (ten tries to miss document ``index``) from a random sentence on,
    until ``length`` of them."""
    for _ in range(10):
        other = int(rng.integers(len(documents)))
        if other != index:
            break
    document, tokens = documents[other], []
    for sentence in document[int(rng.integers(len(document))):]:
        tokens.extend(sentence)
        if len(tokens) >= length:
            break
    return tokens


def _truncate_pair(a, b, max_tokens, rng):
    """Trim the longer of A and B one token at a time, from its front or its back at random, until
    the pair fits (create_pretraining_data's truncate_seq_pair)."""
    a, b = list(a), list(b)
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        del longer[0 if rng.random() < 0.5 else -1]
    return a, b
