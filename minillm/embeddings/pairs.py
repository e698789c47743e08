"""(anchor, positive) pairs for contrastive training: read from a file, tokenized once, batched.

    anchor<TAB>positive          one pair per line (a first line "anchor<TAB>positive" is a header)
    A man is eating food.	Someone is eating.

    pairs = PairDataset.from_tsv(encoder, "pairs.tsv")
    Trainer(loss_model, args, pairs, data_collator=pairs.collate)   # batches {"anchor": ..., "positive": ...}
"""
import functools

import numpy

from ..data import Dataset, pad_batch

HEADER = ["anchor", "positive"]


class PairDataset(Dataset):
    """Pairs of texts tokenized as ``encoder`` tokenizes (its max_seq_length, its lower-casing).

    Item i is {"anchor": {"input_ids": (L,), "token_type_ids": (L,)}, "positive": {...}}.
    ``input_ids`` (every text's ids, anchors then positives) and ``labels`` (i for pair i: anchor
    i's positive, the diagonal of a batch's scores) are what the Trainer's fingerprint hashes.
    """

    def __init__(self, encoder, anchors, positives, name="pairs"):
        if len(anchors) != len(positives):
            raise ValueError(f"{name}: {len(anchors)} anchors but {len(positives)} positives")
        if not anchors:
            raise ValueError(f"{name}: no pairs")
        self.anchors, self.positives = _tokenized(encoder, anchors), _tokenized(encoder, positives)
        self.labels = numpy.arange(len(anchors))
        self.pad_token_id = encoder.tokenizer.pad_token_id

    @classmethod
    def from_tsv(cls, encoder, path):
        """Pairs from a file of "anchor<TAB>positive" lines; an error names the line that is not one."""
        anchors, positives = [], []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                fields = line.rstrip("\n").rstrip("\r").split("\t")
                if number == 1 and [x.strip().lower() for x in fields] == HEADER:
                    continue
                if len(fields) != 2:
                    raise ValueError(f"{path}:{number}: expected anchor<TAB>positive, got {len(fields)} "
                                     f"tab-separated fields")
                anchors.append(fields[0])
                positives.append(fields[1])
        return cls(encoder, anchors, positives, name=path)

    @property
    def input_ids(self):
        return [e["input_ids"] for e in self.anchors + self.positives]

    def __len__(self):
        return len(self.anchors)

    def __getitem__(self, index):
        return {"anchor": self.anchors[index], "positive": self.positives[index]}

    @functools.cached_property
    def collate(self):
        """The data collator: a list of items -> {"anchor": pad_batch(...), "positive": pad_batch(...)},
        each side padded to its own longest text, the keyword arguments of the loss model."""
        return functools.partial(collate_pairs, pad_token_id=self.pad_token_id)


def collate_pairs(examples, pad_token_id=0):
    return {side: pad_batch([e[side] for e in examples], pad_token_id) for side in ("anchor", "positive")}


def _tokenized(encoder, texts, chunk=1024):
    """Each text's ids and types, unpadded (the batch pads them), cut at the encoder's max_seq_length;
    tokenized ``chunk`` texts at a time, which bounds the padded (chunk, longest) temporary."""
    items = []
    for start in range(0, len(texts), chunk):
        batch = encoder.tokenize(texts[start:start + chunk])
        items += [{"input_ids": batch["input_ids"][i, :n].copy(), "token_type_ids": batch["token_type_ids"][i, :n].copy()}
                  for i, n in enumerate(batch["attention_mask"].sum(axis=1))]
    return items
