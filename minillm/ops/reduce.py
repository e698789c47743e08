"""Reductions over axes: sum, mean, max. ``dim`` is None (all axes), an int or a tuple.

A reduction's backward spreads g back over the reduced axes: reshape g to keep the reduced
axes as size 1 (if keepdim was False), then broadcast it to the input's shape.
``sum`` and ``max`` here are torch's names for the ops; Python's builtins are ``builtins.max``.
"""
import builtins
import collections

from .. import backend
from ..tensor import Function, Tensor


def _axes(dim, ndim):
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    for d in dims:
        if not -ndim <= d < builtins.max(ndim, 1):
            raise IndexError(f"dim {d} is out of range for a tensor with {ndim} dims")
    return tuple(sorted(d % builtins.max(ndim, 1) for d in dims))


def _expand(g, shape, axes, keepdim):
    """g reshaped so the reduced axes are size 1, then broadcast to ``shape``."""
    if not keepdim:
        g = g.reshape(tuple(1 if i in axes else n for i, n in enumerate(shape)))
    return backend.array_module(g).broadcast_to(g, shape)


class Sum(Function):
    """z = sum of x over axes.   dL/dx = g broadcast back over the summed axes."""

    def forward(self, x, dim=None, keepdim=False):
        axes = _axes(dim, x.ndim)
        self.save(x.shape, axes, keepdim)
        return x.sum(axis=axes, keepdims=keepdim)

    def backward(self, g):
        return _expand(g, *self.saved)


def sum(x, dim=None, keepdim=False): return Sum.apply(x, dim=dim, keepdim=keepdim)


class Mean(Function):
    """z = mean of x over axes (n elements each).   dL/dx = g / n broadcast back."""
    float_only = True

    def forward(self, x, dim=None, keepdim=False):
        axes = _axes(dim, x.ndim)
        self.save(x.shape, axes, keepdim)
        return x.mean(axis=axes, keepdims=keepdim)

    def backward(self, g):
        shape, axes, keepdim = self.saved
        count = 1
        for a in axes:
            count *= shape[a]
        return _expand(g / builtins.max(count, 1), shape, axes, keepdim)


def mean(x, dim=None, keepdim=False): return Mean.apply(x, dim=dim, keepdim=keepdim)


class Max(Function):
    """z = max of x over axes.
    dL/dx = g at the elements equal to the max, shared equally among ties, 0 elsewhere."""

    def forward(self, x, dim=None, keepdim=False):
        axes = _axes(dim, x.ndim)
        z = x.max(axis=axes, keepdims=True)
        self.save(x, z, axes, keepdim)
        return z if keepdim else z.reshape(tuple(n for i, n in enumerate(x.shape) if i not in axes))

    def backward(self, g):
        x, z, axes, keepdim = self.saved
        winners = x == z
        share = (winners / winners.sum(axis=axes, keepdims=True)).astype(g.dtype)  # bool / int is float64
        return _expand(g, x.shape, axes, keepdim) * share


MaxResult = collections.namedtuple("MaxResult", ["values", "indices"])


def max(x, dim=None, keepdim=False):
    """The maximum over all elements, or, given ``dim``, (values, indices) along it, as torch."""
    values = Max.apply(x, dim=dim, keepdim=keepdim)
    if dim is None:
        return values
    xp = backend.array_module(x.data)
    return MaxResult(values, Tensor(xp.argmax(x.data, axis=dim, keepdims=keepdim)))
