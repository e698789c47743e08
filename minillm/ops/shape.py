"""Ops that move elements without changing them: reshape, permute, indexing, rows gathered and
scattered back, cat, stack.
Each backward moves the gradient back the way the forward moved the data."""
from .. import backend
from ..tensor import Function, Tensor


class Reshape(Function):
    """z = x viewed with a new shape.   dL/dx = g reshaped to x's shape."""

    def forward(self, x, shape):
        self.save(x.shape)
        return x.reshape(shape)

    def backward(self, g):
        return g.reshape(self.saved[0])


def reshape(x, shape): return Reshape.apply(x, shape=shape)


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


def permute(x, dims): return Permute.apply(x, axes=dims)


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


def getitem(x, index):
    """x[index]: basic slices, or integer/boolean arrays (a gather); Tensors in the index are unwrapped."""
    if isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    elif isinstance(index, Tensor):
        index = index.data
    return GetItem.apply(x, index)


def _is_gather(index):
    """Whether an index holds an integer or boolean array (advanced indexing)."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(hasattr(p, "shape") or isinstance(p, list) for p in parts)


class GatherRows(Function):
    """z = x[index] along the first axis, ``index`` naming each row at most once: the N real tokens
    of a (B * L, E) padded batch (minillm/nn/padding.py).
    dL/dx = zeros of x's shape with g's rows put back at ``index``: an assignment, where GetItem's
    backward must add (np.add.at), since its indices may repeat."""

    def forward(self, x, index):
        self.save(x.shape, index)
        return x[index]

    def backward(self, g):
        shape, index = self.saved
        gx = backend.array_module(g).zeros(shape, dtype=g.dtype)
        gx[index] = g
        return gx, None


def gather_rows(x, index):
    """x[index] for distinct row numbers ``index`` (an integer array); see GatherRows."""
    return GatherRows.apply(x, index)


class ScatterRows(Function):
    """z = zeros of (rows, *x.shape[1:]) with z[index] = x: GatherRows' inverse, which puts N rows
    back at their places, e.g. the real tokens into their padded batch (zeros at the padding).
    dL/dx = g[index]."""

    def forward(self, x, index, rows):
        self.save(index)
        z = backend.array_module(x).zeros((rows,) + x.shape[1:], dtype=x.dtype)
        z[index] = x
        return z

    def backward(self, g):
        return g[self.saved[0]], None


def scatter_rows(x, index, rows):
    """``rows`` rows of zeros with x's rows at the distinct row numbers ``index``; see ScatterRows."""
    if len(index) != x.shape[0]:
        raise ValueError(f"scatter_rows: index has {len(index)} row numbers for the {x.shape[0]} rows of x")
    return ScatterRows.apply(x, index, rows=rows)


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


def cat(tensors, dim=0):
    """Join tensors along an existing axis ``dim`` (torch.cat)."""
    tensors = list(tensors)
    _same_shape_but(tensors, dim, "cat")
    return Cat.apply(*tensors, dim=dim)


class Stack(Function):
    """z = inputs stacked along a new axis ``dim``.   dL/dx_i = g taken at position i of that axis."""

    def forward(self, *xs, dim=0):
        self.save(dim)
        return backend.array_module(xs[0]).stack(xs, axis=dim)

    def backward(self, g):
        dim = self.saved[0]
        return tuple(g.take(i, axis=dim) for i in range(g.shape[dim]))


def stack(tensors, dim=0):
    """Join equally shaped tensors along a new axis ``dim`` (torch.stack)."""
    tensors = list(tensors)
    _same_shape_but(tensors, None, "stack")
    return Stack.apply(*tensors, dim=dim)


def _same_shape_but(tensors, dim, name):
    if not tensors:
        raise ValueError(f"{name}: expected a non-empty list of tensors")
    first = tensors[0].shape
    for i, t in enumerate(tensors[1:], 1):
        a = [n for d, n in enumerate(first) if dim is None or d != dim % len(first)]
        b = [n for d, n in enumerate(t.shape) if dim is None or d != dim % max(t.ndim, 1)]
        if len(first) != t.ndim or a != b:
            along = "" if dim is None else f" except along dim {dim}"
            raise ValueError(f"{name}: tensor 0 has shape {first} and tensor {i} has shape {t.shape}; "
                             f"shapes must match{along}")
