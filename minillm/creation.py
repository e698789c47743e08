"""Tensor factories with torch's names and float32 default: zeros, ones, full, arange, randn, rand.
Each takes ``device`` ('cpu' by default, or 'cuda'); random samples are drawn on the host from
minillm's seeded generator and then copied, so a seed gives the same numbers on every device."""
import numpy

from . import backend, random
from .tensor import Tensor


def _shape(size):
    return tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else tuple(size)


def zeros(*size, dtype=numpy.float32, device="cpu", requires_grad=False):
    xp = backend.module_for(device)
    with backend.use_device(device):
        return Tensor(xp.zeros(_shape(size), dtype=dtype), requires_grad=requires_grad)


def ones(*size, dtype=numpy.float32, device="cpu", requires_grad=False):
    xp = backend.module_for(device)
    with backend.use_device(device):
        return Tensor(xp.ones(_shape(size), dtype=dtype), requires_grad=requires_grad)


def full(size, fill_value, dtype=numpy.float32, device="cpu", requires_grad=False):
    xp = backend.module_for(device)
    with backend.use_device(device):
        return Tensor(xp.full(_shape((size,)), fill_value, dtype=dtype), requires_grad=requires_grad)


def zeros_like(t, requires_grad=False):
    return zeros(t.shape, dtype=t.dtype, device=t.device, requires_grad=requires_grad)


def ones_like(t, requires_grad=False):
    return ones(t.shape, dtype=t.dtype, device=t.device, requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None, device="cpu"):
    """Integers (int64) for integer arguments, else float32, as torch.arange."""
    values = numpy.arange(start, end, step) if end is not None else numpy.arange(start)
    if dtype is None:
        dtype = numpy.int64 if values.dtype.kind in "iu" else numpy.float32
    return Tensor(backend.to_device(values, device, dtype))


def randn(*size, dtype=numpy.float32, device="cpu", requires_grad=False):
    """Standard normal samples from minillm's seeded generator (mm.manual_seed)."""
    return Tensor(backend.to_device(random.normal(_shape(size), dtype=dtype), device), requires_grad=requires_grad)


def rand(*size, dtype=numpy.float32, device="cpu", requires_grad=False):
    return Tensor(backend.to_device(random.uniform(_shape(size), dtype), device), requires_grad=requires_grad)
