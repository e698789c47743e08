"""Row softmax over the last axis, with an optional additive mask.

    y_i = exp(x_i + m_i - c) / sum_j exp(x_j + m_j - c),  c = max_j (x_j + m_j)

Subtracting the row maximum c changes nothing mathematically and keeps exp from overflowing.
A row whose entries are all -inf (fully masked) has no maximum; it gives zeros, not NaN.
``stable_softmax`` writes this once; the softmax and attention twins and log-softmax's and
cross-entropy's ``logsumexp`` (log sum_j exp(x_j) = c + log sum_j exp(x_j - c)) all use it.

Backward (y = softmax(x), g = dL/dy):  dL/dx_i = y_i * (g_i - sum_j g_j y_j)
NumPy twins first; the compiled twins are csrc/softmax.pyx and, on the GPU, csrc/cuda/softmax.cu.
"""
import numpy

from .. import backend
from . import dispatch


def _shifted_exp(x, axis):
    """(exp(x - c), total = sum exp(x - c), c) along ``axis`` with keepdims, c the row maximum, or 0
    where the row has none (all -inf: exp(-inf) = 0, so total = 0). The masked stable softmax, once."""
    xp = backend.array_module(x)
    if x.shape[axis] == 0:  # rows of no entries: a total of 0, as an all -inf row's (max has no identity)
        zeros = xp.zeros(x.shape[:axis % x.ndim] + (1,) + x.shape[axis % x.ndim + 1:], x.dtype)
        return x, zeros, zeros
    row_max = x.max(axis=axis, keepdims=True)
    row_max = xp.where(row_max == -xp.inf, 0, row_max)  # +inf and NaN stay: their rows are NaN, as torch's
    e = xp.exp(x - row_max)
    return e, e.sum(axis=axis, keepdims=True), row_max


def stable_softmax(x, axis=-1):
    """(p, total, c): p = softmax(x) along ``axis`` (zeros for an all -inf row, not NaN), and with
    keepdims c and total as _shifted_exp gives them: log(total) + c is log sum exp(x), -inf for an
    all -inf row (the attention twin's lse)."""
    e, total, row_max = _shifted_exp(x, axis)
    return e / backend.array_module(x).where(total == 0, 1, total), total, row_max


def logsumexp(x, axis=-1):
    """log sum exp(x) along ``axis``, with keepdims: stable for large x, 0 for an all -inf row."""
    xp = backend.array_module(x)
    _, total, row_max = _shifted_exp(x, axis)
    return xp.log(xp.where(total == 0, 1, total)) + row_max  # a NaN total (a +inf or NaN entry) stays NaN


def softmax_forward_numpy(x, mask=None):
    if mask is not None:
        x = x + mask
    if x.size == 0:  # max has nothing to reduce
        return backend.array_module(x).zeros_like(x)
    return stable_softmax(x)[0]


def softmax_backward_numpy(y, grad):
    return y * (grad - (grad * y).sum(axis=-1, keepdims=True))


@dispatch.kernel("softmax", numpy=softmax_forward_numpy)
def softmax_forward(x, mask=None):
    """softmax(x + mask) over the last axis. x: (..., N) float32 or float64; mask: additive,
    broadcastable to x, same dtype. The compiled twins never materialize a broadcast mask at x's size."""
    dispatch.check_float("softmax", "input", x)
    if x.ndim == 0:
        raise ValueError("softmax: input must have at least one dimension")
    if mask is not None:
        dispatch.one_place("softmax", x, mask=mask)
        if mask.dtype != x.dtype:
            raise TypeError(f"softmax: mask dtype {mask.dtype} differs from input dtype {x.dtype}")
        try:
            if numpy.broadcast_shapes(mask.shape, x.shape) != x.shape:
                raise ValueError
        except ValueError:
            raise ValueError(f"softmax: mask of shape {mask.shape} does not broadcast to input shape {x.shape}") from None
    return x, mask


@dispatch.kernel("softmax", numpy=softmax_backward_numpy)
def softmax_backward(y, grad):
    """dL/dx from y = softmax(x), the forward's output, and dL/dy, both (..., N) of one float dtype."""
    dispatch.check_float("softmax", "output", y)
    dispatch.one_place("softmax backward", y, grad=grad)
    if grad.shape != y.shape or grad.dtype != y.dtype:
        raise ValueError(f"softmax backward: grad {grad.shape} {grad.dtype} must match output {y.shape} {y.dtype}")
    if y.ndim == 0:
        raise ValueError("softmax backward: output must have at least one dimension")
    return y, grad


def _rows(x):
    """x as a C-contiguous (rows, n) array (a copy only if x is not C-contiguous)."""
    return backend.array_module(x).ascontiguousarray(x).reshape(-1, x.shape[-1])


def _mask_rows(mask, shape):
    """The mask as (flat C-contiguous values, offset of each input row's n mask values).

    Only the mask's last axis is expanded to n; its leading axes keep their own sizes and each of
    the prod(shape[:-1]) input rows gets the offset of the mask row it broadcasts from.
    """
    xp = backend.array_module(mask)
    mask = mask.reshape((1,) * (len(shape) - mask.ndim) + mask.shape)
    n = shape[-1]
    values = xp.ascontiguousarray(xp.broadcast_to(mask, mask.shape[:-1] + (n,)))
    first = xp.arange(0, values.size, n, dtype=numpy.int64).reshape(values.shape[:-1])
    return values.reshape(-1), xp.ascontiguousarray(xp.broadcast_to(first, shape[:-1]).reshape(-1))


@softmax_forward.compiled
def _softmax_forward_compiled(compiled, x, mask):
    if x.size == 0:
        return numpy.zeros_like(x)
    values, offsets = _mask_rows(mask, x.shape) if mask is not None else (None, None)
    rows = _rows(x)
    y = numpy.empty_like(rows)
    compiled.forward(rows, values, offsets, y)
    return y.reshape(x.shape)


@softmax_backward.compiled
def _softmax_backward_compiled(compiled, y, grad):
    if y.size == 0:
        return numpy.zeros_like(y)
    rows = _rows(y)
    out = numpy.empty_like(rows)
    compiled.backward(rows, _rows(grad), out)
    return out.reshape(y.shape)
