"""The replicas at the start of a run: the same model everywhere, rank 0's weights, rank-seeded dropout;
and the evaluation shards whose metrics are reduced over the ranks.

Horovod's recipe: every rank builds the model, the ranks check they built the same one (parameter
names, shapes and dtypes, and a hash of the config: a rank given other arguments is refused, with
what differs, before any step), then rank 0's parameters are broadcast so every replica starts
from one set of weights whatever each rank's initialization drew.
"""
import hashlib
import json

from .. import random
from .buckets import DEFAULT_BUCKET_MB, DistributedOptimizer


class ModelMismatch(RuntimeError):
    """The ranks built different models; says which rank differs from rank 0, and how."""


def describe(model):
    """(config hash, [(name, shape, dtype)]): what every rank's model must share."""
    config = getattr(model, "config", None)
    config = config.to_dict() if hasattr(config, "to_dict") else vars(config) if config is not None else {}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return digest, [(name, tuple(p.shape), str(p.dtype)) for name, p in model.named_parameters()]


def check_same_model(model, world):
    """Raise ModelMismatch, on every rank alike, unless every rank's model is rank 0's (describe)."""
    described = world.allgather(describe(model))
    (config0, params0), problems = described[0], []
    for rank, (config, params) in enumerate(described[1:], 1):
        if config != config0:
            problems.append(f"rank {rank}'s config hash is {config}, rank 0's {config0}")
        theirs, ours = dict((n, s) for n, *s in params), dict((n, s) for n, *s in params0)
        names = sorted(set(theirs) ^ set(ours))
        if names:
            problems.append(f"rank {rank} and rank 0 differ in parameter names: {names[:5]}")
        problems += [f"rank {rank}'s {n} is {theirs[n]}, rank 0's {ours[n]} (shape, dtype)"
                     for n in ours if n in theirs and theirs[n] != ours[n]][:5]
    if problems:
        raise ModelMismatch("minillm.distributed: the ranks built different models: " + "; ".join(problems))


def broadcast_parameters(model, world):
    """Copy rank 0's parameters into every rank's, in place (MPI Bcast of each array).
    minillm's modules keep no buffers beside their parameters (state_dict is the parameters)."""
    for _, p in model.named_parameters():
        world.broadcast(p.data)


def replicate(model, optimizer, world, seed, bucket_cap_mb=DEFAULT_BUCKET_MB):
    """The start of a data-parallel run: check_same_model, broadcast_parameters, dropout's generator
    seeded with (seed, rank) so the ranks draw different masks (a rerun the same ones), and
    ``optimizer`` wrapped in a DistributedOptimizer that averages the gradients over the ranks."""
    if any(p.is_cuda for p in model.parameters()):
        raise NotImplementedError("minillm.distributed: the gradients are averaged over MPI on the host; the "
                                  "NCCL path for --device cuda is not written yet: train on the CPU under mpirun")
    check_same_model(model, world)
    broadcast_parameters(model, world)
    random.manual_seed([seed, world.rank])
    return DistributedOptimizer(optimizer, model.named_parameters(), world, bucket_cap_mb)


class Shard:
    """Rank ``rank``'s part of ``dataset`` for evaluation: examples rank, rank + size, ... (no padding,
    so each example is scored once; the ranks' counts may differ by one)."""

    def __init__(self, dataset, world):
        self.dataset, self.indices = dataset, range(world.rank, len(dataset), world.size)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[self.indices[i]]


def average_metrics(metrics, world):
    """An evaluation's metrics of each rank's shard ({"loss", "accuracy", ..., "examples"}) -> those of
    the whole set: each metric the mean over the ranks weighted by their "examples" (right for means
    such as the loss and the accuracy; every rank returns the same keys, in the same order)."""
    if world.size == 1:
        return metrics
    names = [k for k in metrics if k != "examples"]
    n = metrics["examples"]
    *sums, examples = world.average([metrics[k] * n for k in names] + [n])
    return {**{k: total / examples for k, total in zip(names, sums)}, "examples": round(examples * world.size)}
