"""DataLoader: batches of a Dataset in a seeded order, and the collate functions that build them.

Order. Without shuffle, batches follow the dataset. With shuffle, pass k over the data (k = 0, 1,
...) uses the permutation drawn from numpy's Generator seeded with (seed, k): the same seed gives
the same batches on any machine, and a resumed run can rebuild pass k's batches without replaying
passes 0..k-1 (``batches(epoch)``).

Length bucketing (``bucket=True``, for datasets with ``lengths``): the shuffled indices are cut
into pools of ``BUCKET_POOL`` batches, each pool is sorted by length and cut into batches, and the
batches are shuffled again. Batches then hold texts of similar length, so dynamic padding adds
little, while each batch is still a random draw from a random pool. It changes which examples
share a batch, so it is an option, never the default.

Sharding (``num_replicas``, ``rank``: torch's DistributedSampler, for minillm.distributed): every
rank draws the same permutation, pads it by repeating its first indices to a multiple of
num_replicas, and keeps every num_replicas-th index from ``rank`` on. The shards are disjoint
(but for the padding), of equal length, so every rank runs the same number of steps; with a
batch_size of b and no bucketing, rank r's batch i and the other ranks' are together the batch i
of size num_replicas * b that one process would draw (with ``bucket``, each rank groups its own
shard by length: the step counts stay equal, the batches are the shard's).
"""
import numpy

BUCKET_POOL = 50  # batches per sorting pool


def default_collate(examples):
    """Stack a list of same-shaped examples: dicts and tuples field by field, arrays and numbers."""
    first = examples[0]
    if isinstance(first, dict):
        return {key: default_collate([e[key] for e in examples]) for key in first}
    if isinstance(first, (tuple, list)):
        return type(first)(default_collate(list(field)) for field in zip(*examples))
    return numpy.stack([numpy.asarray(e) for e in examples])


def pad_batch(examples, pad_token_id=0):
    """Pad token sequences to the longest in the batch (dynamic padding).

    examples: dicts with "input_ids" (L_i,) and optional "token_type_ids" (L_i,), "labels" ().
    Returns "input_ids", "token_type_ids", "attention_mask": (B, max L_i) int64 (mask 1 on real
    tokens, 0 on padding), and "labels" when the examples have them: (B,) int64 class ids, or the
    examples' float labels stacked, (B,) or (B, C) float32 (regression, multi-label).
    """
    lengths = [len(e["input_ids"]) for e in examples]
    width = max(lengths)
    ids = numpy.full((len(examples), width), pad_token_id, dtype=numpy.int64)
    types = numpy.zeros((len(examples), width), dtype=numpy.int64)
    mask = numpy.zeros((len(examples), width), dtype=numpy.int64)
    for row, (e, n) in enumerate(zip(examples, lengths)):
        ids[row, :n] = e["input_ids"]
        if "token_type_ids" in e:
            types[row, :n] = e["token_type_ids"]
        mask[row, :n] = 1
    batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    if "labels" in examples[0]:
        labels = numpy.stack([numpy.asarray(e["labels"]) for e in examples])
        batch["labels"] = labels.astype(numpy.int64 if labels.dtype.kind in "biu" else numpy.float32)
    return batch


class DataLoader:
    """As torch.utils.data.DataLoader: iterate a Dataset in batches.

    batch_size: examples per batch; drop_last: drop a final, smaller batch; shuffle + seed: a new
    seeded order on every pass; bucket: group similar lengths (needs ``dataset.lengths``);
    collate_fn: list of examples -> batch (default: stack); num_replicas, rank: iterate only this
    rank's shard of every pass (module docstring).
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, seed=0, drop_last=False, collate_fn=None,
                 bucket=False, num_replicas=1, rank=0):
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
        if bucket and getattr(dataset, "lengths", None) is None:
            raise ValueError("DataLoader: bucket=True needs a dataset with a `lengths` array "
                             "(e.g. TextClassificationDataset)")
        if len(dataset) == 0:
            raise ValueError("DataLoader: the dataset is empty")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"DataLoader: rank must be in [0, num_replicas={num_replicas}), got {rank!r}")
        self.num_replicas, self.rank = num_replicas, rank
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self.drop_last, self.bucket = drop_last, bucket
        self.collate_fn = collate_fn or default_collate
        self.epoch = 0  # the pass the next iteration uses; set_epoch() picks one

    def __len__(self):
        n, b = -(-len(self.dataset) // self.num_replicas), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def batches(self, epoch):
        """The index arrays of pass ``epoch``'s batches, in order."""
        n = len(self.dataset)
        rng = numpy.random.default_rng([self.seed, epoch])
        order = rng.permutation(n) if self.shuffle else numpy.arange(n)
        if self.num_replicas > 1:
            order = numpy.resize(order, -(-n // self.num_replicas) * self.num_replicas)[self.rank::self.num_replicas]
            n = len(order)
        if self.bucket:
            return self._bucketed(order, rng)
        cut = len(self) * self.batch_size if self.drop_last else n
        return [order[i:i + self.batch_size] for i in range(0, cut, self.batch_size)]

    def _bucketed(self, order, rng):
        lengths = numpy.asarray(self.dataset.lengths)
        pool = self.batch_size * BUCKET_POOL
        batches = []
        for start in range(0, len(order), pool):
            chunk = order[start:start + pool]
            chunk = chunk[numpy.argsort(lengths[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]  # only the last can be short
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        for indices in self.batches(epoch):
            yield self.collate_fn([self.dataset[int(i)] for i in indices])
