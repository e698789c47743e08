"""Data for fine-tuning: read labeled text, tokenize it once, and serve padded batches.

    texts, labels = read_glue_tsv("sst2/train.tsv")               # checked row by row
    data = TextClassificationDataset(tokenizer, texts, labels, max_length=64)
    loader = DataLoader(data, batch_size=32, shuffle=True, seed=42, collate_fn=pad_batch)
    for batch in loader:                                            # dict of (B, L) int64 arrays
        ...                                                         # L = longest text in this batch

and for pretraining, unlabelled text cut into examples and masked batch by batch:

    blocks = GroupedTextDataset(tokenizer, read_text_files("corpus.txt"), block_size=128)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    loader = DataLoader(blocks, batch_size=32, shuffle=True, collate_fn=collator)   # + "labels" (B, L)
"""
from .dataset import Dataset, TextClassificationDataset  # noqa: F401
from .glue import DataError, read_glue_tsv  # noqa: F401
from .loader import DataLoader, default_collate, pad_batch  # noqa: F401
from .language_modeling import DataCollatorForLanguageModeling  # noqa: F401
from .text_corpus import (GroupedTextDataset, LineByLineTextDataset, TextDatasetForNextSentencePrediction,  # noqa: F401
                          group_texts, read_text_files)
