"""Gradient averaging over flat buckets, overlapped with backward (torch DDP's reducer, Horovod's
tensor fusion), behind an optimizer wrapper as Horovod's DistributedOptimizer.

The parameters are cut, in reverse order (backward reaches the last layers first), into buckets
of about ``bucket_cap_mb`` MB, each one flat float buffer. A post-accumulate-grad hook
(Tensor.register_post_accumulate_grad_hook, minillm/tensor.py) copies each parameter's gradient
into its bucket as soon as backward has produced it; when a bucket holds all of its gradients its
non-blocking ``Iallreduce`` (sum) starts, while backward goes on with the earlier layers.
Buckets start in index order on every rank (MPI needs every rank to issue the collectives in one
order), so a full bucket waits for the ones before it. ``synchronize()`` (train_step calls it
before clipping) fills in zeros for parameters that got no gradient, starts what has not started,
waits for every bucket, and sets each ``.grad`` to its view of the bucket divided by the number
of ranks:

    grad_p = (1 / N) sum_r grad_p^(r)

which, the loss being each rank's mean over its b examples, is the gradient of the mean over all
N b examples: the gradient one process computes on the global batch. (As with torch's DDP, that
holds where every rank's loss averages as many targets; with ignored labels, a rank's mean is over
its kept targets, and a rank that keeps none adds a zero gradient.) The clipping after it sees the
global norm. Each ``.grad`` is a view of its bucket, which the next backward overwrites (torch's
gradient_as_bucket_view=True): copy a gradient to keep it past the step.
"""
import numpy

from ..tensor import Tensor

DEFAULT_BUCKET_MB = 25


class Bucket:
    """A flat buffer over some parameters: offsets, which gradients have arrived, the request."""

    def __init__(self, params):
        self.params = params
        self.offsets, total = {}, 0
        for p in params:
            self.offsets[id(p)] = (total, p.numel())
            total += p.numel()
        self.flat = numpy.empty(total, dtype=params[0].dtype)
        self.arrived, self.request = set(), None

    def put(self, p):
        """Copy p's gradient into the buffer (zeros if it has none); True once all have arrived."""
        start, n = self.offsets[id(p)]
        if id(p) in self.arrived:
            raise RuntimeError("minillm.distributed: a second backward before optimizer.step(): gradient "
                               "accumulation over backwards is not supported by DistributedOptimizer")
        self.flat[start:start + n] = 0 if p.grad is None else p.grad.data.reshape(-1)
        self.arrived.add(id(p))
        return len(self.arrived) == len(self.params)


def make_buckets(params, bucket_cap_mb):
    """Consecutive parameters of one dtype, reversed, in buckets of at most bucket_cap_mb MB (a
    larger parameter alone)."""
    cap, buckets, current, size = bucket_cap_mb * 2**20, [], [], 0
    for p in reversed(params):
        nbytes = p.numel() * p.dtype.itemsize
        if current and (size + nbytes > cap or p.dtype != current[0].dtype):
            buckets.append(Bucket(current))
            current, size = [], 0
        current.append(p)
        size += nbytes
    if current:
        buckets.append(Bucket(current))
    return buckets


class DistributedOptimizer:
    """``optimizer`` whose step() uses gradients averaged over the ranks of ``world``.

    named_parameters: the model's (name, parameter) pairs, the same order on every rank (checked
    by replicate). Everything but synchronize/step/zero_grad (param_groups, state_dict, ...) is
    the wrapped optimizer's, so schedules and checkpoints see the usual optimizer.
    """

    def __init__(self, optimizer, named_parameters, world, bucket_cap_mb=DEFAULT_BUCKET_MB):
        if not bucket_cap_mb > 0:
            raise ValueError(f"DistributedOptimizer: bucket_cap_mb must be > 0, got {bucket_cap_mb!r}")
        self.optimizer, self.world = optimizer, world
        params = [p for _, p in named_parameters if p.requires_grad]
        self.buckets = make_buckets(params, bucket_cap_mb)
        self.bucket_of = {id(p): bucket for bucket in self.buckets for p in bucket.params}
        self.started = 0  # buckets whose Iallreduce has started, in order
        self.handles = [p.register_post_accumulate_grad_hook(self._gradient_ready) for p in params]

    def __getattr__(self, name):
        return getattr(self.optimizer, name)

    def _gradient_ready(self, p):
        if self.bucket_of[id(p)].put(p):
            self._start_ready()
        for bucket in self.buckets[:self.started]:  # MPICH moves a non-blocking collective on only
            if bucket.request is not None:          # inside MPI calls: Test() is that call
                bucket.request.Test()

    def _start_ready(self):
        """Start the full buckets at the head of the order (every rank starts them in that order)."""
        while self.started < len(self.buckets) and len(self.buckets[self.started].arrived) == \
                len(self.buckets[self.started].params):
            self._start(self.buckets[self.started])
            self.started += 1

    def _start(self, bucket):
        bucket.request = self.world.iallreduce(bucket.flat)

    def synchronize(self):
        """Wait for every bucket's allreduce (starting the ones backward did not fill) and set each
        parameter's .grad to the mean over ranks. Call once after backward, before clipping."""
        for bucket in self.buckets:
            for p in bucket.params:
                if id(p) not in bucket.arrived:
                    bucket.put(p)
        self._start_ready()
        for bucket in self.buckets:
            if bucket.request is not None:
                self.world.wait(bucket.request, "the allreduce of a gradient bucket")
            bucket.flat /= self.world.size
            for p in bucket.params:
                start, n = bucket.offsets[id(p)]
                p.grad = Tensor(bucket.flat[start:start + n].reshape(p.shape))
            bucket.arrived, bucket.request = set(), None
        self.started = 0

    def step(self):
        """The wrapped optimizer's step, after synchronize() if backward ran since the last one."""
        if any(bucket.arrived for bucket in self.buckets):
            self.synchronize()
        self.optimizer.step()

    def zero_grad(self, set_to_none=True):
        self.optimizer.zero_grad(set_to_none)
