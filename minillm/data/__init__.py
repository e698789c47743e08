"""Data for fine-tuning: read labeled text, tokenize it once, and serve padded batches.

    examples = read_examples("rte/train.tsv")                    # .tsv, .csv, .jsonl; checked row by row
    labels = encode_labels(examples)                              # ids and id2label (names sorted)
    data = TextClassificationDataset(tokenizer, examples.texts, labels.values, max_length=128,
                                     text_pairs=examples.text_pairs)
    loader = DataLoader(data, batch_size=32, shuffle=True, seed=42, collate_fn=pad_batch)
    for batch in loader:                                            # dict of (B, L) int64 arrays
        ...                                                         # L = longest text in this batch

and for pretraining, unlabelled text cut into examples and masked batch by batch:

    blocks = GroupedTextDataset(tokenizer, read_text_files("corpus.txt"), block_size=128)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    loader = DataLoader(blocks, batch_size=32, shuffle=True, collate_fn=collator)   # + "labels" (B, L)
"""
from .dataset import Dataset, TextClassificationDataset  # noqa: F401
from .readers import DataError, Examples, read_examples, read_rows  # noqa: F401
from .labels import PROBLEM_TYPES, Labels, encode_labels  # noqa: F401
from .loader import DataLoader, default_collate, pad_batch  # noqa: F401
from .language_modeling import DataCollatorForLanguageModeling  # noqa: F401
from .text_corpus import (GroupedTextDataset, LineByLineTextDataset, TextDatasetForNextSentencePrediction,  # noqa: F401
                          group_texts, read_text_files)
