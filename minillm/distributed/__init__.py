"""Data-parallel training over MPI (mpi4py), as Horovod and torch's DistributedDataParallel do it.

    mpirun -n 2 minillm finetune ...          # the same command, one replica per rank

    world = distributed.world()               # rank, size: from the MPI launcher; size 1 without one
    optimizer = distributed.replicate(model, optimizer, world, seed)   # check, broadcast, seed by rank
    loss = model(**batch).loss
    loss.backward()                           # each full bucket's Iallreduce starts from the hooks
    optimizer.synchronize()                   # wait for every bucket: .grad is the mean over ranks
    optimizer.step()

world.py: who is who (the launcher's environment, the 1-process fallback, abort on an exception);
replicas.py: the start (same model on every rank, parameters broadcast from rank 0);
buckets.py: gradient averaging in flat buckets (DistributedOptimizer). The data is sharded by
DataLoader(num_replicas=, rank=) (minillm/data/loader.py) and evaluation by Shard.
"""
from .world import World, world  # noqa: F401
from .replicas import ModelMismatch, Shard, average_metrics, broadcast_parameters, check_same_model  # noqa: F401
from .replicas import replicate  # noqa: F401
from .buckets import DEFAULT_BUCKET_MB, DistributedOptimizer  # noqa: F401
