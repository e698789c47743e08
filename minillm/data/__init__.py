"""Data for fine-tuning: read labeled text, tokenize it once, and serve padded batches.

    examples = read_examples("rte/train.tsv")                    # .tsv, .csv, .jsonl; checked row by row
    labels = encode_labels(examples)                              # ids and id2label (names sorted)
    data = TextClassificationDataset(tokenizer, examples.texts, labels.values, max_length=128,
                                     text_pairs=examples.text_pairs)
    loader = DataLoader(data, batch_size=32, shuffle=True, seed=42, collate_fn=pad_batch)
    for batch in loader:                                            # dict of (B, L) int64 arrays
        ...                                                         # L = longest text in this batch
"""
from .dataset import Dataset, TextClassificationDataset  # noqa: F401
from .readers import DataError, Examples, read_examples, read_rows  # noqa: F401
from .labels import PROBLEM_TYPES, Labels, encode_labels  # noqa: F401
from .loader import DataLoader, default_collate, pad_batch  # noqa: F401
