"""Ops that move elements without changing them: reshape, permute, indexing, cat, stack.
Each backward moves the gradient back the way the forward moved the data."""
from .. import backend
from ..tensor import Function


class Reshape(Function):
    """z = x viewed with a new shape.   dL/dx = g reshaped to x's shape."""

    def forward(self, x, shape):
        self.save(x.shape)
        return x.reshape(shape)

    def backward(self, g):
        return g.reshape(self.saved[0])


class Permute(Function):
    """z = x with its axes reordered (z.shape[i] = x.shape[axes[i]]).
    dL/dx = g permuted by the inverse order."""

    def forward(self, x, axes):
        if sorted(a % max(x.ndim, 1) for a in axes) != list(range(x.ndim)):
            raise ValueError(f"dims {axes} are not a permutation of the {x.ndim} dims")
        self.save(axes)
        return x.transpose(axes)

    def backward(self, g):
        axes = [a % g.ndim for a in self.saved[0]]
        inverse = [0] * len(axes)
        for i, a in enumerate(axes):
            inverse[a] = i
        return g.transpose(inverse)


class GetItem(Function):
    """z = x[index], with basic slices or integer arrays (a gather, as an embedding lookup).

    dL/dx = zeros of x's shape with g scattered back to the indexed places; an element picked
    twice (a repeated token id) receives the sum of its gradients, hence scatter-*add*.
    """

    def forward(self, x, index):
        self.save(x.shape, x.dtype, index)
        return x[index]

    def backward(self, g):
        shape, dtype, index = self.saved
        xp = backend.array_module(g)
        gx = xp.zeros(shape, dtype=dtype)
        if _is_gather(index):
            xp.add.at(gx, index, g)
        else:  # basic slices pick each element at most once: plain assignment is enough
            gx[index] = g
        return gx, None


def _is_gather(index):
    """Whether an index holds an integer or boolean array (advanced indexing)."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(hasattr(p, "shape") or isinstance(p, list) for p in parts)


class Cat(Function):
    """z = inputs joined along ``dim``.   dL/dx_i = the slice of g where x_i landed."""

    def forward(self, *xs, dim=0):
        xp = backend.array_module(xs[0])
        self.save(dim, [x.shape[dim] for x in xs])
        return xp.concatenate(xs, axis=dim)

    def backward(self, g):
        dim, sizes = self.saved
        xp = backend.array_module(g)
        bounds = [sum(sizes[:i + 1]) for i in range(len(sizes) - 1)]
        return tuple(xp.split(g, bounds, axis=dim))


class Stack(Function):
    """z = inputs stacked along a new axis ``dim``.   dL/dx_i = g taken at position i of that axis."""

    def forward(self, *xs, dim=0):
        self.save(dim)
        return backend.array_module(xs[0]).stack(xs, axis=dim)

    def backward(self, g):
        dim = self.saved[0]
        return tuple(g.take(i, axis=dim) for i in range(g.shape[dim]))
